package sfu

import (
	"sync"
	"time"

	"github.com/pion/rtcp"
)

// NACK generation for publishers' video. pion's generator interceptor never
// sees packets repaired over RTX (they bypass the media stream's
// interceptors, pion/webrtc#3063), so it keeps NACKing packets that have
// arrived, up to its retry limit, and the publisher resends each lost packet
// that many times. The SFU's read loop sees every packet, repaired or not,
// so it keeps the list of missing packets itself: a missing packet is NACKed
// at the next tick, again every retry interval (1.25 × the least recent
// NACK→repair time, at least nackInterval) until it arrives, at most
// nackMaxPerPacket times.
const (
	nackWindow = 512 // sequence numbers tracked behind the highest
	nackMaxGap = 256 // a larger jump is a new stream run, not loss
	// nackRTTWindow is how long the least NACK→repair time is kept.
	nackRTTWindow = 10 * time.Second
)

type nackSlot struct {
	seq       uint16
	pending   bool
	nacks     uint8
	firstNack int64 // clock time of the first NACK
	next      int64 // clock time before which it is not NACKed again
}

// nackTracker is fed by a track's read loop (onPacket) and drained by its
// NACK loop (due); a mutex serialises the two.
type nackTracker struct {
	interval  time.Duration
	clock     func() int64 // monotonic ns
	maxPerPkt uint8
	mu        sync.Mutex
	started   bool
	highest   uint16
	pending   int
	// The least NACK→repair time over the current and the previous
	// nackRTTWindow (a windowed minimum in two buckets), ns; 0: unknown.
	rttCur, rttPrev int64
	rttStart        int64 // start of the current bucket
	ring            [nackWindow]nackSlot
	seqs            []uint16 // scratch for due
	gaveUp          uint64
	// wake is signalled when packets go missing with none missing
	// before: the NACK loop sleeps while nothing is missing (a 50 Hz
	// ticker per video track costs ~1 % of a core at 50 calls).
	wake chan struct{}
}

func newNackTracker(interval time.Duration, maxPerPacket uint8) *nackTracker {
	base := time.Now()
	return &nackTracker{interval: interval, maxPerPkt: maxPerPacket, wake: make(chan struct{}, 1),
		clock: func() int64 { return int64(time.Since(base)) }}
}

// onPacket records the arrival of seq (new, late, or repaired: rtx says
// it came as a retransmission). The next packet in order, by far the most
// common, does not even read the clock. It reports a jump ahead too far to
// repair (an outage upstream): only a keyframe can restore the picture.
func (n *nackTracker) onPacket(seq uint16, rtx bool) (jumped bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !n.started {
		n.started, n.highest = true, seq
		return false
	}
	diff := int16(seq - n.highest)
	if diff == 1 {
		slot := &n.ring[seq%nackWindow]
		if slot.pending {
			n.pending-- // fell out of the window unrepaired
			n.gaveUp++
		}
		slot.seq, slot.pending = seq, false
		n.highest = seq
		return false
	}
	now := n.clock()
	if diff <= 0 && int(-diff) < nackWindow {
		s := &n.ring[seq%nackWindow]
		if s.pending && s.seq == seq {
			s.pending = false
			n.pending--
			// Only a retransmission measures the round trip: an original
			// that was merely late would shrink it to nothing. Measured
			// from the first NACK, which overestimates when that NACK or
			// its repair was lost (sampling only unambiguous repairs
			// would starve while the retry is shorter than the round
			// trip); hence a windowed minimum.
			if s.nacks > 0 && rtx {
				n.sampleRTT(now-s.firstNack, now)
			}
		}
		return false
	}
	if diff <= 0 || int(diff) > nackMaxGap { // far back or far ahead: a new run
		n.reset(seq)
		return diff > 0
	}
	if n.pending == 0 && diff > 1 { // the first gap: wake the NACK loop
		select {
		case n.wake <- struct{}{}:
		default:
		}
	}
	for s := n.highest + 1; ; s++ {
		slot := &n.ring[s%nackWindow]
		if slot.pending {
			n.pending-- // fell out of the window unrepaired
			n.gaveUp++
		}
		*slot = nackSlot{seq: s, pending: s != seq, next: now}
		if s == seq {
			break
		}
		n.pending++
	}
	n.highest = seq
	return false
}

func (n *nackTracker) reset(seq uint16) {
	n.gaveUp += uint64(n.pending)
	n.ring = [nackWindow]nackSlot{}
	n.pending, n.highest = 0, seq
}

func (n *nackTracker) sampleRTT(d, now int64) {
	if d <= 0 {
		return
	}
	if now-n.rttStart > int64(nackRTTWindow) {
		n.rttPrev, n.rttCur, n.rttStart = n.rttCur, 0, now
	}
	if n.rttCur == 0 || d < n.rttCur {
		n.rttCur = d
	}
}

// rtt is the least NACK→repair time lately, 0 if unknown.
func (n *nackTracker) rtt() int64 {
	if n.rttPrev == 0 || (n.rttCur != 0 && n.rttCur < n.rttPrev) {
		return n.rttCur
	}
	return n.rttPrev
}

// retry is the time between two NACKs of one packet: a bit more than a
// NACK takes to be answered (like LiveKit's and Chromium's RTT-spaced
// retries), so a packet is not asked for again while its repair is on
// the way.
func (n *nackTracker) retry() int64 {
	rtt := n.rtt()
	return max(int64(n.interval), rtt+rtt/4)
}

// due returns the NACK to send at now, or nil if nothing is due.
func (n *nackTracker) due(now int64, mediaSSRC uint32) *rtcp.TransportLayerNack {
	n.mu.Lock()
	if n.pending == 0 {
		n.mu.Unlock()
		return nil
	}
	n.seqs = n.seqs[:0]
	retry := n.retry()
	for s := n.highest - nackWindow + 1; s != n.highest; s++ {
		slot := &n.ring[s%nackWindow]
		if !slot.pending || slot.seq != s || now < slot.next {
			continue
		}
		if slot.nacks >= n.maxPerPkt {
			slot.pending = false
			n.pending--
			n.gaveUp++
			continue
		}
		if slot.nacks == 0 {
			slot.firstNack = now
		}
		slot.nacks++
		slot.next = now + retry
		n.seqs = append(n.seqs, s)
	}
	var nack *rtcp.TransportLayerNack
	if len(n.seqs) > 0 {
		nack = &rtcp.TransportLayerNack{MediaSSRC: mediaSSRC, Nacks: rtcp.NackPairsFromSequenceNumbers(n.seqs)}
	}
	n.mu.Unlock()
	return nack
}

// idle reports that no packet is missing.
func (n *nackTracker) idle() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.pending == 0
}

// runNACKs sends the tracker's NACKs to the publisher until done is
// closed: while packets are missing, every interval (the first half an
// interval after a gap appears, as a free-running ticker would on
// average); while none are, it sleeps.
func (u *upTrack) runNACKs(done <-chan struct{}) {
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	ssrc := uint32(u.track.SSRC())
	for {
		select {
		case <-done:
			return
		case <-u.nack.wake:
		}
		t.Reset(u.nack.interval / 2)
		for active := true; active; {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if nack := u.nack.due(u.nack.clock(), ssrc); nack != nil {
				_ = u.writeRTCP([]rtcp.Packet{nack})
			}
			if active = !u.nack.idle(); active {
				t.Reset(u.nack.interval)
			}
		}
	}
}
