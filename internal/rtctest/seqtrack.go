package rtctest

import (
	"cmp"
	"encoding/binary"
	"slices"
	"sync"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// VideoRate describes a realistic video stream for StartMedia: FPS frames a
// second, each split into PacketsPerFrame packets of Size payload bytes
// (e.g. 30 fps x 7 x 1000 B = 210 packets/s, about 1.7 Mbit/s).
type VideoRate struct {
	FPS, PacketsPerFrame, Size int
}

// PacketsPerSecond is the video packet rate.
func (r VideoRate) PacketsPerSecond() int { return r.FPS * r.PacketsPerFrame }

// VideoPayload returns the payload StartMedia sends as video packet n with
// RTP timestamp ts: n and ts in the first eight bytes, then a pattern
// derived from n; size bytes in all (at least 8).
func VideoPayload(n, ts uint32, size int) []byte {
	size = max(size, 8)
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b, n)
	binary.BigEndian.PutUint32(b[4:], ts)
	for i := 8; i < size; i++ {
		b[i] = byte(n) ^ byte(i) ^ 0x5a
	}
	return b
}

// videoPayloadHeader returns the packet number and timestamp a video
// payload carries, and whether the payload is intact.
func videoPayloadHeader(b []byte) (n, ts uint32, ok bool) {
	if len(b) < 8 {
		return 0, 0, false
	}
	n, ts = binary.BigEndian.Uint32(b), binary.BigEndian.Uint32(b[4:])
	return n, ts, string(VideoPayload(n, ts, len(b))) == string(b)
}

// StartMedia sends audio as StartSending does (50 packets/s) and video at
// rate, with VideoPayload payloads and one RTP timestamp per frame (marker
// on its last packet), until the peer is closed or stop is called. Do not
// combine it with StartSending: both write the same tracks.
func (p *Peer) StartMedia(rate VideoRate) (stop func()) {
	done := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		audio := time.NewTicker(20 * time.Millisecond)
		defer audio.Stop()
		video := time.NewTicker(time.Second / time.Duration(rate.FPS))
		defer video.Stop()
		tsStep := uint32(90000 / rate.FPS)
		var an, frame, vn uint32
		// A ticker drops the ticks its reader missed: on a starved machine
		// the sender would send less than rate and tests would blame the
		// server. Each tick sends whatever is due since the start instead
		// (at most a second's worth at once).
		start := time.Now()
		due := func(perSecond int, sent uint32) int {
			n := int(time.Since(start)*time.Duration(perSecond)/time.Second) + 1 - int(sent)
			return min(n, perSecond)
		}
		for {
			select {
			case <-p.stop:
				return
			case <-done:
				return
			case <-audio.C:
				for range due(50, an) {
					p.send(p.Audio, webrtc.RTPCodecTypeAudio, an, an*960)
					an++
				}
			case <-video.C:
				for range due(rate.FPS, frame) {
					p.sendFrame(rate, frame*tsStep, &vn)
					frame++
				}
			}
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// sendFrame writes one video frame of rate's size, numbering its packets
// from *vn on.
func (p *Peer) sendFrame(rate VideoRate, ts uint32, vn *uint32) {
	for i := range rate.PacketsPerFrame {
		_ = p.Video.WriteRTP(&rtp.Packet{
			Header: rtp.Header{
				Version: 2, Marker: i == rate.PacketsPerFrame-1,
				SequenceNumber: uint16(*vn), Timestamp: ts,
			},
			Payload: VideoPayload(*vn, ts, rate.Size),
		})
		*vn++
	}
}

type numbered struct {
	sent uint32 // the sender's packet number (from the payload)
	seq  uint64 // extended received sequence number
}

// SeqTracker records, for every sequence number of a received video track,
// when a later packet showed it missing and when it finally arrived. It
// expects one continuous sequence (one source, StartMedia's payloads).
type SeqTracker struct {
	mu      sync.Mutex
	started bool
	base    uint64      // extended sequence number of the first packet
	highest uint64      // highest extended sequence number so far
	arrived []time.Time // by ext-base: first arrival; zero if not (yet)
	gapAt   []time.Time // by ext-base: when a later packet arrived first; zero if never missing
	firsts  []time.Time // first arrivals, in arrival order
	dups    int
	corrupt int
	// Intact packets by (sent minus received) timestamp: for one source,
	// all should share the same offset; and their sender numbers with the
	// received sequence numbers, which must rise together.
	tsOffsets map[uint32]int
	numbered  []numbered
	onGap     func(missing int)
}

// OnGap sets f (nil: none) to run on the track's read goroutine whenever an
// arriving packet reveals missing sequence numbers; missing counts them.
func (s *SeqTracker) OnGap(f func(missing int)) {
	s.mu.Lock()
	s.onGap = f
	s.mu.Unlock()
}

func (s *SeqTracker) add(seq uint16, ts uint32, payload []byte, now time.Time) {
	n, sentTS, ok := videoPayloadHeader(payload)
	padding := len(payload) == 0 // a probe: takes a sequence number, carries nothing
	s.mu.Lock()
	if !s.started {
		// Offset by 2^32 so that packets sent before the first one unwrap
		// below base rather than below zero; highest starts just before.
		s.started, s.base = true, uint64(seq)+1<<32
		s.highest = s.base - 1
	}
	ext := uint64(int64(s.highest) + int64(int16(seq-uint16(s.highest))))
	switch {
	case padding:
	case ok:
		if s.tsOffsets == nil {
			s.tsOffsets = map[uint32]int{}
		}
		s.tsOffsets[sentTS-ts]++
		s.numbered = append(s.numbered, numbered{sent: n, seq: ext})
	default:
		s.corrupt++
	}
	if ext < s.base { // sent before the first packet that arrived: not tracked
		s.mu.Unlock()
		return
	}
	missing := 0
	for x := s.highest + 1; x <= ext; x++ {
		s.arrived = append(s.arrived, time.Time{})
		s.gapAt = append(s.gapAt, time.Time{})
		if x < ext {
			s.gapAt[x-s.base] = now
			missing++
		}
	}
	s.highest = max(s.highest, ext)
	if i := ext - s.base; s.arrived[i].IsZero() {
		s.arrived[i] = now
		s.firsts = append(s.firsts, now)
	} else {
		s.dups++
	}
	f := s.onGap
	s.mu.Unlock()
	if missing > 0 && f != nil {
		f(missing)
	}
}

// misnumbered counts intact packets out of step with the others: with a
// timestamp offset other than the most common one, or whose sequence
// number does not rise with the sender's (the path may insert padding,
// which shifts later numbers, but never reorders or reuses them).
func (s *SeqTracker) misnumbered() int {
	most, all := 0, 0
	for _, n := range s.tsOffsets {
		most, all = max(most, n), all+n
	}
	bad := all - most
	byN := slices.Clone(s.numbered)
	slices.SortFunc(byN, func(a, b numbered) int { return cmp.Compare(a.sent, b.sent) })
	for i := 1; i < len(byN); i++ {
		if byN[i].sent != byN[i-1].sent && byN[i].seq <= byN[i-1].seq {
			bad++
		}
	}
	return bad
}

// SeqReport summarises a SeqTracker.
type SeqReport struct {
	Expected   int // sequence numbers known by the cutoff (see Report)
	Received   int // of those, the ones that arrived
	Missed     int // of those, the ones a later packet showed missing
	Repaired   int // of the missed, the ones that arrived after all
	Unrepaired int // of the missed, the ones still missing
	// Repairs holds, sorted, the time from the first packet after a gap to
	// the missing one, for every repaired sequence number.
	Repairs []time.Duration
	// LongestOpen is how long the oldest unrepaired one has been missing.
	LongestOpen time.Duration

	// Whole run:
	Duplicates int // packets whose sequence number had already arrived
	Corrupt    int // payloads that do not match what StartMedia sent
	// Misnumbered counts intact packets whose sequence number or timestamp
	// is out of step with the others': the sender's timestamps, shifted by
	// a constant, and the order of its sequence numbers must survive the
	// path (padding the path inserts shifts later numbers).
	Misnumbered int
}

// Residual is the fraction of expected packets that never arrived.
func (r SeqReport) Residual() float64 {
	if r.Expected == 0 {
		return 0
	}
	return float64(r.Unrepaired) / float64(r.Expected)
}

// MaxRepair is the longest repair time (0 if nothing was repaired).
func (r SeqReport) MaxRepair() time.Duration {
	if len(r.Repairs) == 0 {
		return 0
	}
	return r.Repairs[len(r.Repairs)-1]
}

// RepairQuantile returns the q-quantile (0..1) of the repair times.
func (r SeqReport) RepairQuantile(q float64) time.Duration {
	if len(r.Repairs) == 0 {
		return 0
	}
	return r.Repairs[min(len(r.Repairs)-1, int(q*float64(len(r.Repairs))))]
}

// RepairedWithin counts the repairs that took at most d.
func (r SeqReport) RepairedWithin(d time.Duration) int {
	n, _ := slices.BinarySearchFunc(r.Repairs, d, func(a, b time.Duration) int {
		if a <= b {
			return -1
		}
		return 1
	})
	return n
}

// Report returns the numbers for the sequence numbers known by cutoff:
// those that arrived before it, and those a packet before it showed
// missing. Repairs count up to now; a gap still open counts as unrepaired.
// Keep media flowing between cutoff and now: pion hands a packet repaired
// over RTX to Read only when the next original packet arrives.
func (s *SeqTracker) Report(cutoff, now time.Time) SeqReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := SeqReport{Duplicates: s.dups, Corrupt: s.corrupt, Misnumbered: s.misnumbered()}
	for i, at := range s.arrived {
		gap := s.gapAt[i]
		switch {
		case gap.IsZero() && !at.IsZero() && at.Before(cutoff):
			r.Expected++
			r.Received++
		case gap.IsZero() || !gap.Before(cutoff):
		case at.IsZero() || !at.Before(now):
			r.Expected++
			r.Missed++
			r.Unrepaired++
			r.LongestOpen = max(r.LongestOpen, now.Sub(gap))
		default:
			r.Expected++
			r.Received++
			r.Missed++
			r.Repaired++
			r.Repairs = append(r.Repairs, at.Sub(gap))
		}
	}
	slices.Sort(r.Repairs)
	return r
}

// Arrivals counts the first arrivals of sequence numbers in each whole
// window of length w between from and to.
func (s *SeqTracker) Arrivals(from, to time.Time, w time.Duration) []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]int, max(0, int(to.Sub(from)/w)))
	for _, at := range s.firsts {
		if i := int(at.Sub(from) / w); !at.Before(from) && i < len(out) {
			out[i]++
		}
	}
	return out
}

// TrackSequences replaces the peer's track handler with one that also
// records every video sequence number in the returned SeqTracker and
// checks video payloads against StartMedia's; audio is handled as before.
// Call it before any media can arrive: pion keeps only the last OnTrack
// handler. Received, SendPLI and Close work as before.
func (p *Peer) TrackSequences() *SeqTracker {
	s := &SeqTracker{}
	p.PC.OnTrack(func(tr *webrtc.TrackRemote, recv *webrtc.RTPReceiver) {
		if tr.Kind() != webrtc.RTPCodecTypeVideo {
			p.onTrack(tr, recv)
			return
		}
		p.readTrack(tr, func(pkt *rtp.Packet) {
			s.add(pkt.SequenceNumber, pkt.Timestamp, pkt.Payload, time.Now())
			_, _, ok := videoPayloadHeader(pkt.Payload)
			p.record(webrtc.RTPCodecTypeVideo, pkt, ok)
		})
	})
	return s
}
