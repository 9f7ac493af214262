package sfu

import (
	"math"
	"testing"
	"time"

	"github.com/pion/rtcp"
)

func TestRewriterPaddingBetweenFrames(t *testing.T) {
	r := newRewriter(3000)
	next := func(seq uint16, marker bool) uint16 {
		t.Helper()
		out, _, ok := r.mapPacket(1, seq, 9000, marker)
		if !ok {
			t.Fatalf("packet %d refused", seq)
		}
		return out
	}
	if r.betweenFrames() {
		t.Fatal("padding allowed before any packet")
	}
	first := next(100, false)
	if r.betweenFrames() {
		t.Fatal("padding allowed inside a frame")
	}
	next(101, true) // end of frame
	if !r.betweenFrames() {
		t.Fatal("no padding after a frame")
	}
	p1, ts := r.padding()
	p2, _ := r.padding()
	if p1 != first+2 || p2 != first+3 || ts != 9000 {
		t.Fatalf("padding numbered %d %d (ts %d), want %d %d", p1, p2, ts, first+2, first+3)
	}
	if got := next(102, false); got != first+4 {
		t.Fatalf("packet after padding: %d, want %d", got, first+4)
	}
	// A late packet from before the padding keeps its place.
	if got := next(99, false); got != first-1 {
		t.Fatalf("late packet: %d, want %d", got, first-1)
	}
	next(103, true)
	p3, _ := r.padding()
	if got := next(104, false); got != p3+1 {
		t.Fatalf("after second padding: %d, want %d", got, p3+1)
	}
	// Packets between the two paddings keep the first shift.
	if got := next(102, false); got != first+4 {
		t.Fatalf("late packet between paddings: %d, want %d", got, first+4)
	}
}

func TestRewriterForgetsShiftsBeyondItsMemory(t *testing.T) {
	r := newRewriter(3000)
	seq := uint16(65000) // wraps during the test
	for range maxShifts + 2 {
		r.mapPacket(1, seq, 0, true)
		r.padding()
		seq++
	}
	if _, _, ok := r.mapPacket(1, 64990, 0, false); ok {
		t.Fatal("a packet older than every remembered shift was numbered")
	}
	if _, _, ok := r.mapPacket(1, seq-2, 0, false); !ok {
		t.Fatal("a recent late packet was refused")
	}
	// A source switch forgets the shifts of the old source.
	r.sourceChanged()
	if _, _, ok := r.mapPacket(2, 5, 0, false); !ok {
		t.Fatal("new source refused")
	}
}

func TestSendHistoryFeedback(t *testing.T) {
	var h sendHistory
	for i := range 10 {
		h.onSent(uint16(65530+i), 1000, 0, time.Duration(i)*time.Millisecond, 7)
	}
	// 65530..65533 received 1 ms apart, 65534 lost, 65535 and 0..3 received.
	fb := &rtcp.TransportLayerCC{
		BaseSequenceNumber: 65530, PacketStatusCount: 10, ReferenceTime: 10,
		PacketChunks: []rtcp.PacketStatusChunk{
			&rtcp.RunLengthChunk{Type: rtcp.TypeTCCRunLengthChunk, PacketStatusSymbol: rtcp.TypeTCCPacketReceivedSmallDelta, RunLength: 4},
			&rtcp.StatusVectorChunk{Type: rtcp.TypeTCCStatusVectorChunk, SymbolSize: rtcp.TypeTCCSymbolSizeTwoBit,
				SymbolList: []uint16{0, 1, 1, 1, 1, 1, 0}}, // 7 symbols, only 6 count
		},
	}
	for range 9 {
		fb.RecvDeltas = append(fb.RecvDeltas, &rtcp.RecvDelta{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 2000})
	}
	h.onFeedback(fb)
	if p := h.slot(65534); !p.lost || p.acked {
		t.Fatalf("65534: %+v, want lost", *p)
	}
	if p := h.slot(3); !p.acked || p.arrived != 640*time.Millisecond+18*time.Millisecond {
		t.Fatalf("seq 3: %+v, want acked at 658 ms", *p)
	}
	r := h.measure(7, 65530, 3)
	if r.sent != 10 || r.received != 9 || r.lost != 1 {
		t.Fatalf("counts %+v", r)
	}
	// Sent 9,000 bytes (first excluded) over 9 ms; received 8,000 bytes
	// (last excluded) over 16 ms.
	if math.Abs(r.sendRate-8e6) > 1 || math.Abs(r.recvRate-4e6) > 1 {
		t.Fatalf("rates %v %v, want 8e6 4e6", r.sendRate, r.recvRate)
	}
	// Malformed feedback (too few deltas) stops cleanly.
	h.onFeedback(&rtcp.TransportLayerCC{BaseSequenceNumber: 1, PacketStatusCount: 50,
		PacketChunks: []rtcp.PacketStatusChunk{&rtcp.RunLengthChunk{PacketStatusSymbol: rtcp.TypeTCCPacketReceivedLargeDelta, RunLength: 50}}})
}

// simLink is a bottleneck with a drop-tail queue: what the prober's
// packets would meet on a capped downlink.
type simLink struct {
	rate     float64       // bit/s
	maxQueue time.Duration // queueing delay beyond which packets drop
	free     time.Duration // when the link is next idle
	seq      uint16        // next transport-wide sequence number
	sent     int           // packets offered
	drops    int           // packets dropped at the full queue
}

func (l *simLink) send(at time.Duration, size int) (arrival time.Duration, ok bool) {
	start := max(at, l.free)
	l.sent++
	if start-at > l.maxQueue {
		l.drops++
		return 0, false
	}
	l.free = start + time.Duration(float64(size*8)/l.rate*float64(time.Second))
	return l.free + 10*time.Millisecond, true
}

// simulate runs the probe controller against a link for d, with media at
// mediaRate (bounded by the estimate, as a publisher obeying REMB would
// be) and feedback every 50 ms; raises from probes update *target.
func simulate(t *testing.T, c *probeController, h *sendHistory, link *simLink, start, d time.Duration, target *int, mediaRate int) {
	t.Helper()
	type inflight struct {
		seq     uint16
		arrival time.Duration
		ok      bool
	}
	var pending []inflight
	send := func(now time.Duration, size int) {
		id := c.activeCluster(now)
		h.onSent(link.seq, size, 0, now, id)
		if id != 0 {
			c.onSent(link.seq, size)
		}
		arr, ok := link.send(now, size)
		pending = append(pending, inflight{link.seq, arr, ok})
		link.seq++
	}
	const step = 5 * time.Millisecond
	var mediaDebt float64
	for now := start; now < start+d; now += step {
		// Media: a publisher sends what the estimate allows, up to what it wants.
		mediaDebt += float64(min(mediaRate, *target)) / 8 * step.Seconds()
		for mediaDebt >= 1000 {
			send(now, 1000)
			mediaDebt -= 1000
		}
		for need := c.deficit(now); need > 0; need -= paddingPacket {
			send(now, paddingPacket)
		}
		if now%(50*time.Millisecond) == 0 && len(pending) > 0 {
			// Feedback on everything that has arrived (or is lost) by now.
			var done []inflight
			for len(pending) > 0 && (!pending[0].ok || pending[0].arrival <= now) {
				done, pending = append(done, pending[0]), pending[1:]
			}
			for _, p := range done {
				s := h.slot(p.seq)
				if p.ok {
					s.arrived, s.acked = p.arrival, true
				} else {
					s.lost = true
				}
			}
			if raise, _ := c.poll(now, *target, true, h); raise > 0 {
				*target = raise
			}
		}
	}
}

func TestProbesFindTheCapAndRecoverWhenItLifts(t *testing.T) {
	var c probeController
	var h sendHistory
	target := bweMin // pinned at the floor after a dip, as GCC leaves it
	link := &simLink{rate: 300_000, maxQueue: 200 * time.Millisecond}
	// Capped: probes find about the cap and never push the estimate above it.
	simulate(t, &c, &h, link, time.Second, 20*time.Second, &target, 500_000)
	t.Logf("capped at 300 kbit/s: estimate %d after %d clusters (%d raised); the link dropped %d of %d packets",
		target, c.clusters, c.raises, link.drops, link.sent)
	if target > 300_000 || target < 200_000 {
		t.Fatalf("under a 300 kbit/s cap the estimate is %d, want 200-300 kbit/s", target)
	}
	capped := c.clusters
	// Lifted: the estimate climbs well above the media's needs within 6 s
	// (at most probeBackoffMax to the next cluster, then a few quick steps).
	link.rate = 50_000_000
	simulate(t, &c, &h, link, 21*time.Second, 6*time.Second, &target, 500_000)
	t.Logf("lifted: estimate %d after %d more clusters", target, c.clusters-capped)
	if target < 1_000_000 {
		t.Fatalf("6 s after the cap was lifted the estimate is %d, want over 1 Mbit/s", target)
	}
	// At the ceiling probing stops.
	before := c.clusters
	target = probeCeiling
	simulate(t, &c, &h, link, 27*time.Second, 10*time.Second, &target, 500_000)
	if c.clusters > before+1 {
		t.Fatalf("%d clusters sent at the ceiling", c.clusters-before)
	}
}

func TestProbeEstimate(t *testing.T) {
	for _, c := range []struct {
		r    clusterResult
		est  float64
		full bool
	}{
		{clusterResult{sent: 20, received: 20, sendRate: 1e6, recvRate: 1e6}, 1e6, false},
		{clusterResult{sent: 20, received: 20, sendRate: 1e6, recvRate: 1.2e6}, 1e6, false}, // burst compression
		{clusterResult{sent: 20, received: 20, sendRate: 1e6, recvRate: 5e5}, 4.75e5, true},
		{clusterResult{sent: 20, received: 15, lost: 5, sendRate: 1e6, recvRate: 1e6}, 9.5e5, true},
		{clusterResult{sent: 3, received: 3}, 0, true},
	} {
		est, full := probeEstimate(c.r)
		if est != c.est || full != c.full {
			t.Errorf("%+v: %v %v, want %v %v", c.r, est, full, c.est, c.full)
		}
	}
}

func TestNoProbeWhileTheEstimateFalls(t *testing.T) {
	var c probeController
	var h sendHistory
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, step := range []struct {
		at, target int
		start      bool
	}{
		{0, 1_000_000, false},    // first feedback: the call starts first
		{1100, 1_000_000, true},  // a probe
		{1500, 1_000_000, false}, // awaiting its result (none arrives)
		{2400, 400_000, false},   // the estimate fell: a queue builds
		{2900, 300_000, false},   // still falling
		{3500, 300_000, false},   // held still for only 0.6 s
		{3950, 300_000, true},    // 1 s after the last fall
	} {
		if _, started := c.poll(ms(step.at), step.target, true, &h); started != step.start {
			t.Fatalf("at %d ms (estimate %d): started %v, want %v", step.at, step.target, started, step.start)
		}
		if c.state == probeSending {
			c.state = probeAwaiting // nothing sent in this test
			c.end = ms(step.at)
		}
	}
}
