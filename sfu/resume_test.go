package sfu

import (
	"testing"
	"time"
)

func TestMediaResume(t *testing.T) {
	m := newMediaResume(90000, 2500*time.Millisecond) // gap 225,000 ticks
	const gap = 225000
	base := uint32(4294967000)
	steps := []struct {
		ts   uint32
		want bool
	}{
		{base, false}, // the first
		{base + 3000, false},
		{base + 6000, false},            // across the wrap, in order
		{base + 3000, false},            // older (a retransmission)
		{base + 6000 + gap - 1, false},  // just under the gap
		{base + 6000 + 2*gap - 1, true}, // a hole of exactly the gap
		{base + 6000 + 2*gap + 2999, false},
		{base + 6000 + 2*gap + 2999 + 1<<31, false}, // half the space away: backwards
	}
	for i, s := range steps {
		if got := m.resumed(s.ts); got != s.want {
			t.Errorf("step %d (ts %d): resumed %v, want %v", i, s.ts, got, s.want)
		}
	}
	var off mediaResume // audio: disabled
	if off.resumed(0) || off.resumed(1<<30) {
		t.Error("a disabled mediaResume reported a resume")
	}
}

func TestNackTrackerReportsJumps(t *testing.T) {
	n := newNackTracker(nackInterval, nackMaxPerPacket)
	for _, s := range []struct {
		seq  uint16
		want bool
	}{
		{65000, false}, {65001, false}, {65001 + 10, false}, // a repairable gap
		{65011 + nackMaxGap, false},                 // the largest repairable jump
		{65011 + nackMaxGap + nackMaxGap + 1, true}, // too far ahead: an outage
		{100, false}, // far back: a new run, not a hole
	} {
		if got := n.onPacket(s.seq, false); got != s.want {
			t.Errorf("seq %d: jumped %v, want %v", s.seq, got, s.want)
		}
	}
}
