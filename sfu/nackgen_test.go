package sfu

import (
	"slices"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

// arrive records seq arriving at now, as a retransmission if it was
// missing.
func arrive(n *nackTracker, seq uint16, now int64) {
	n.clock = func() int64 { return now }
	n.onPacket(seq, int16(seq-n.highest) <= 0)
}

// nacked returns the sequence numbers of the NACK due at now.
func nacked(n *nackTracker, now int64) []uint16 {
	nack := n.due(now, 1)
	if nack == nil {
		return nil
	}
	var out []uint16
	for _, p := range nack.Nacks {
		out = append(out, p.PacketList()...)
	}
	return out
}

func TestNackTrackerAsksUntilRepaired(t *testing.T) {
	n := newNackTracker(20*time.Millisecond, 5)
	for _, s := range []uint16{10, 11, 14, 15} { // 12, 13 lost
		arrive(n, s, 0)
	}
	if got := nacked(n, 0); !slices.Equal(got, []uint16{12, 13}) {
		t.Fatalf("first NACK %v, want [12 13]", got)
	}
	if got := nacked(n, 10*ms); got != nil {
		t.Fatalf("NACK %v before the retry interval", got)
	}
	arrive(n, 12, 15*ms) // repaired
	if got := nacked(n, 20*ms); !slices.Equal(got, []uint16{13}) {
		t.Fatalf("second NACK %v, want [13]: a repaired packet must not be asked for again", got)
	}
	arrive(n, 13, 25*ms)
	if got := nacked(n, 200*ms); got != nil || n.pending != 0 {
		t.Fatalf("NACK %v (%d pending) after every packet arrived", got, n.pending)
	}
	arrive(n, 12, 300*ms) // a duplicate changes nothing
	if n.pending != 0 || n.gaveUp != 0 {
		t.Fatalf("pending %d, gave up %d", n.pending, n.gaveUp)
	}
}

func TestNackTrackerGivesUpAfterMax(t *testing.T) {
	n := newNackTracker(20*time.Millisecond, 3)
	arrive(n, 1, 0)
	arrive(n, 3, 0)
	var count int
	for now := int64(0); now < 500*ms; now += 20 * ms {
		count += len(nacked(n, now))
	}
	if count != 3 || n.gaveUp != 1 || n.pending != 0 {
		t.Fatalf("packet 2 NACKed %d times (want 3), gave up %d, pending %d", count, n.gaveUp, n.pending)
	}
}

// The retry interval follows the measured NACK→repair time, so a packet is
// not asked for again while its repair is still on its way.
func TestNackTrackerRetryFollowsRoundTrip(t *testing.T) {
	n := newNackTracker(20*time.Millisecond, 5)
	arrive(n, 100, 0)
	arrive(n, 102, 0)
	nacked(n, 0)
	arrive(n, 101, 100*ms) // answered after 100 ms
	if n.rtt() != 100*ms || n.retry() != 125*ms {
		t.Fatalf("rtt %v, retry %v; want 100ms, 125ms", time.Duration(n.rtt()), time.Duration(n.retry()))
	}
	arrive(n, 104, 200*ms) // 103 lost
	if got := nacked(n, 200*ms); !slices.Equal(got, []uint16{103}) {
		t.Fatalf("NACK %v, want [103]", got)
	}
	for now := 220 * ms; now < 320*ms; now += 20 * ms {
		if got := nacked(n, now); got != nil {
			t.Fatalf("NACK %v at %v, within the retry interval", got, time.Duration(now))
		}
	}
	if got := nacked(n, 340*ms); !slices.Equal(got, []uint16{103}) {
		t.Fatalf("retry %v, want [103]", got)
	}
	// A repair that took longer (its first NACK was lost) does not
	// stretch the interval; the least recent time does.
	arrive(n, 103, 380*ms)
	if n.rtt() != 100*ms {
		t.Fatalf("rtt %v after a slow repair, want 100ms", time.Duration(n.rtt()))
	}
}

func TestNackTrackerWrapsAndResets(t *testing.T) {
	n := newNackTracker(20*time.Millisecond, 5)
	arrive(n, 65534, 0)
	arrive(n, 1, 0) // 65535 and 0 lost across the wrap
	if got := nacked(n, 0); !slices.Equal(got, []uint16{65535, 0}) {
		t.Fatalf("NACK %v, want [65535 0]", got)
	}
	arrive(n, 5000, 0) // a jump: a new run of the stream, not 4998 losses
	if n.pending != 0 || nacked(n, 100*ms) != nil {
		t.Fatalf("%d pending after a jump", n.pending)
	}
	// A gap wider than the window: what falls out is given up.
	arrive(n, 5002, 0)
	for s := uint16(5003); s < 5003+nackWindow; s++ {
		arrive(n, s, 0)
	}
	if n.pending != 0 || n.gaveUp != 3 {
		t.Fatalf("pending %d, gave up %d (want 0 and 3: 65535, 0 at the reset, then 5001)", n.pending, n.gaveUp)
	}
}

// A late original (reordering), not a retransmission, says nothing of the
// round trip; the least repair time is forgotten after two windows.
func TestNackTrackerRoundTripSamples(t *testing.T) {
	n := newNackTracker(20*time.Millisecond, 5)
	arrive(n, 1, 0)
	arrive(n, 3, 0)
	nacked(n, 0)
	arrive(n, 2, 100*ms) // repaired: 100 ms
	arrive(n, 5, 200*ms)
	nacked(n, 200*ms)
	n.clock = func() int64 { return 203 * ms }
	n.onPacket(4, false) // merely reordered, 3 ms after its NACK
	if n.rtt() != 100*ms {
		t.Fatalf("rtt %v after a reordered packet, want 100ms", time.Duration(n.rtt()))
	}
	// Later the path is slower: 300 ms repairs replace the old minimum
	// once it is two windows old.
	now := int64(0)
	for seq := uint16(6); now < 3*int64(nackRTTWindow); seq += 2 {
		now += int64(time.Second)
		arrive(n, seq+1, now)
		nacked(n, now)
		arrive(n, seq, now+300*ms)
	}
	if n.rtt() != 300*ms {
		t.Fatalf("rtt %v after %v of 300 ms repairs, want 300ms", time.Duration(n.rtt()), time.Duration(now))
	}
}

// A publisher that restarts its sequence far behind is a new run, not a
// stream of late packets.
func TestNackTrackerBackwardJumpResets(t *testing.T) {
	n := newNackTracker(20*time.Millisecond, 5)
	arrive(n, 40000, 0)
	arrive(n, 100, 0)
	arrive(n, 102, 0)
	if got := nacked(n, 0); !slices.Equal(got, []uint16{101}) {
		t.Fatalf("NACK %v after a backward jump, want [101]", got)
	}
}

// TestNackLoopWokenOnlyByGaps: in-order packets leave the NACK loop
// asleep; the first gap wakes it.
func TestNackLoopWokenOnlyByGaps(t *testing.T) {
	n := newNackTracker(20*time.Millisecond, 5)
	for seq := uint16(100); seq < 200; seq++ {
		n.onPacket(seq, false)
	}
	select {
	case <-n.wake:
		t.Fatal("in-order packets woke the NACK loop")
	default:
	}
	n.onPacket(202, false)
	select {
	case <-n.wake:
	default:
		t.Fatal("a gap did not wake the NACK loop")
	}
	if n.idle() {
		t.Fatal("two missing packets, yet idle")
	}
}
