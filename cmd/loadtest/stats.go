package main

import (
	"sync"
	"time"
)

// latency histogram: 10 µs buckets below 2 ms, 100 µs below 50 ms, 1 ms
// below 1 s, then one overflow bucket.
const (
	hFine   = 200 // 0..2 ms
	hMid    = 480 // 2..50 ms
	hCoarse = 950 // 50..1000 ms
	hBins   = hFine + hMid + hCoarse + 1
)

type histogram [hBins]uint32

func bin(d time.Duration) int {
	us := d.Microseconds()
	switch {
	case us < 0:
		return 0
	case us < 2000:
		return int(us / 10)
	case us < 50_000:
		return hFine + int((us-2000)/100)
	case us < 1_000_000:
		return hFine + hMid + int((us-50_000)/1000)
	}
	return hBins - 1
}

// upper returns the upper edge of bin i.
func upper(i int) time.Duration {
	switch {
	case i < hFine:
		return time.Duration(i+1) * 10 * time.Microsecond
	case i < hFine+hMid:
		return 2*time.Millisecond + time.Duration(i-hFine+1)*100*time.Microsecond
	case i < hBins-1:
		return 50*time.Millisecond + time.Duration(i-hFine-hMid+1)*time.Millisecond
	}
	return time.Second
}

func (h *histogram) add(o *histogram) {
	for i := range h {
		h[i] += o[i]
	}
}

func (h *histogram) count() uint64 {
	var n uint64
	for _, c := range h {
		n += uint64(c)
	}
	return n
}

// quantile returns the upper edge of the bin holding quantile q.
func (h *histogram) quantile(q float64) time.Duration {
	n := h.count()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n-1)) + 1
	var seen uint64
	for i, c := range h {
		seen += uint64(c)
		if seen >= rank {
			return upper(i)
		}
	}
	return time.Second
}

// streamState tracks one received stream (a sender's audio or video).
type streamState struct {
	started bool
	maxSeq  uint32
}

// window counts what a receiver saw since the last snapshot.
type window struct {
	Received  uint64 // packets with a valid payload
	Expected  uint64 // advance of the highest sequence number, per stream
	Reordered uint64 // arrived after a later one
	Dup       uint64
	Corrupt   uint64
	Lat       histogram
}

func (w *window) merge(o *window) {
	w.Received += o.Received
	w.Expected += o.Expected
	w.Reordered += o.Reordered
	w.Dup += o.Dup
	w.Corrupt += o.Corrupt
	w.Lat.add(&o.Lat)
}

// loss is the fraction of expected packets that did not arrive.
func (w *window) loss() float64 {
	if w.Expected == 0 || w.Received >= w.Expected {
		return 0
	}
	return float64(w.Expected-w.Received) / float64(w.Expected)
}

// receiver accumulates one participant's incoming media (both kinds).
type receiver struct {
	mu      sync.Mutex
	streams [2]streamState
	seen    [2]seenSet
	cur     window
	first   time.Time // first valid packet
}

// seenSet remembers recently received sequence numbers to count duplicates.
type seenSet struct{ bits [1024]uint64 }

func (s *seenSet) testAndSet(seq uint32) bool {
	i := seq % (1024 * 64)
	w, b := i/64, uint64(1)<<(i%64)
	had := s.bits[w]&b != 0
	s.bits[w] |= b
	return had
}

func (s *seenSet) clear(seq uint32) {
	i := seq % (1024 * 64)
	s.bits[i/64] &^= uint64(1) << (i % 64)
}

func (r *receiver) record(b []byte, video bool, now time.Time) {
	p, ok := parsePayload(b, video)
	r.mu.Lock()
	defer r.mu.Unlock()
	if !ok {
		r.cur.Corrupt++
		return
	}
	k := int(p.kind & 1)
	st, seen := &r.streams[k], &r.seen[k]
	switch {
	case !st.started:
		st.started, st.maxSeq = true, p.seq
		seen.testAndSet(p.seq)
		r.cur.Expected++
	case p.seq > st.maxSeq:
		for s := st.maxSeq + 1; s < p.seq && s-st.maxSeq < 1024*64; s++ {
			seen.clear(s)
		}
		seen.clear(p.seq)
		seen.testAndSet(p.seq)
		r.cur.Expected += uint64(p.seq - st.maxSeq)
		st.maxSeq = p.seq
	default:
		if st.maxSeq-p.seq >= 1024*64 || seen.testAndSet(p.seq) {
			r.cur.Dup++
			return
		}
		r.cur.Reordered++
	}
	if r.first.IsZero() {
		r.first = now
	}
	r.cur.Received++
	r.cur.Lat[bin(now.Sub(time.Unix(0, p.sent)))]++
}

// snapshot returns the window since the last snapshot and starts a new one.
func (r *receiver) snapshot() window {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := r.cur
	r.cur = window{}
	return w
}

func (r *receiver) firstPacket() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.first
}
