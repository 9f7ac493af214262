package recorder

import (
	"time"

	"github.com/pion/rtp"
)

const (
	jitterSlots   = 512 // power of two; the widest sequence span held
	jitterMaxWait = 250 * time.Millisecond
)

// packet is the part of an RTP packet the recorder needs. payload is
// owned by the jitter buffer and only valid during the emit callback.
type packet struct {
	seq     uint16
	ts      uint32
	marker  bool
	arrival int64 // server clock, Unix ns
	payload []byte
}

type slot struct {
	used bool
	pkt  packet
}

// jitterStats counts what the buffer did, for the final log line.
type jitterStats struct {
	received, duplicates, late, lost, resets uint64
}

// emitFunc receives packets in sequence order; lost is the number of
// sequence numbers skipped just before this packet.
type emitFunc func(p *packet, lost int)

// jitterBuffer puts a track's packets back in sequence order. A missing
// packet is waited for up to maxWait after the first packet behind it
// arrived (so a NACKed retransmission can fill it), then skipped.
// Duplicates and packets older than what was already emitted are dropped.
type jitterBuffer struct {
	slots    [jitterSlots]slot
	maxWait  int64
	started  bool
	primeEnd int64  // nothing is emitted before; 0 once emitting
	next     uint16 // next sequence number to emit
	count    int    // packets held
	lost     int    // skipped sequence numbers not yet reported
	deadline int64  // when the hole at next is given up; 0 = not set
	scratch  rtp.Packet
	stats    jitterStats
}

func newJitterBuffer(maxWait time.Duration) *jitterBuffer {
	return &jitterBuffer{maxWait: int64(maxWait)}
}

// parse validates raw and returns its header fields; payload aliases raw.
func (j *jitterBuffer) parse(raw []byte) (*rtp.Packet, bool) {
	if len(raw) < 12 {
		return nil, false
	}
	if err := j.scratch.Unmarshal(raw); err != nil {
		return nil, false
	}
	return &j.scratch, true
}

// push stores p (copying its payload) and emits what became ready.
func (j *jitterBuffer) push(p *rtp.Packet, now int64, emit emitFunc) {
	j.stats.received++
	if !j.started {
		// The first packets may come out of order too: hold them briefly
		// so the stream starts at the lowest sequence number.
		j.started = true
		j.next = p.SequenceNumber
		j.primeEnd = now + j.maxWait/4
	}
	d := int(int16(p.SequenceNumber - j.next))
	if d < 0 && d >= -jitterSlots/2 && j.primeEnd != 0 && j.span(p.SequenceNumber) < jitterSlots {
		j.next = p.SequenceNumber
		d = 0
	}
	switch {
	case d < -jitterSlots || d >= jitterSlots:
		// A jump no reordering explains: the stream restarted.
		j.stats.resets++
		j.flush(emit)
		j.next = p.SequenceNumber
		j.lost++
	case d < 0:
		j.stats.late++
		return
	}
	s := &j.slots[p.SequenceNumber%jitterSlots]
	if s.used {
		j.stats.duplicates++
		return
	}
	s.used = true
	s.pkt.seq = p.SequenceNumber
	s.pkt.ts = p.Timestamp
	s.pkt.marker = p.Marker
	s.pkt.arrival = now
	s.pkt.payload = append(s.pkt.payload[:0], p.Payload...)
	j.count++
	j.release(now, emit)
}

// release emits packets in order, skipping holes that waited too long.
func (j *jitterBuffer) release(now int64, emit emitFunc) {
	if j.primeEnd != 0 {
		if now < j.primeEnd {
			return
		}
		j.primeEnd = 0
	}
	for j.count > 0 {
		s := &j.slots[j.next%jitterSlots]
		if s.used {
			j.emitSlot(s, emit)
			continue
		}
		if j.deadline == 0 {
			j.deadline = j.oldestArrival() + j.maxWait
		}
		if now < j.deadline {
			return
		}
		j.skipHole()
	}
}

func (j *jitterBuffer) emitSlot(s *slot, emit emitFunc) {
	lost := j.lost
	j.lost = 0
	j.deadline = 0
	j.stats.lost += uint64(lost)
	s.used = false
	j.count--
	j.next++
	emit(&s.pkt, lost)
}

// span is the sequence range held if first were the next to emit.
func (j *jitterBuffer) span(first uint16) int {
	last := j.next
	for i := jitterSlots - 1; i >= 0; i-- {
		if s := &j.slots[(j.next+uint16(i))%jitterSlots]; s.used && s.pkt.seq == j.next+uint16(i) {
			last = s.pkt.seq
			break
		}
	}
	return int(last-first) + 1
}

// skipHole advances next to the first held packet.
func (j *jitterBuffer) skipHole() {
	j.deadline = 0
	for i := 0; i < jitterSlots && !j.slots[j.next%jitterSlots].used; i++ {
		j.next++
		j.lost++
	}
}

// oldestArrival is the earliest arrival among held packets.
func (j *jitterBuffer) oldestArrival() int64 {
	var oldest int64
	first := true
	for i := range j.slots {
		if s := &j.slots[i]; s.used && (first || s.pkt.arrival < oldest) {
			oldest, first = s.pkt.arrival, false
		}
	}
	return oldest
}

// flush emits everything held, in order, with the holes as losses.
func (j *jitterBuffer) flush(emit emitFunc) {
	j.primeEnd = 0
	for j.count > 0 {
		s := &j.slots[j.next%jitterSlots]
		if s.used {
			j.emitSlot(s, emit)
			continue
		}
		j.skipHole()
	}
	j.deadline = 0
}
