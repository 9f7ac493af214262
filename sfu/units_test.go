package sfu

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestRewriterKeepsSequenceContinuousAcrossSources(t *testing.T) {
	r := newRewriter(3000)
	var lastSeq uint16
	var lastTS uint32
	for i := uint16(0); i < 10; i++ {
		lastSeq, lastTS = r.rewrite(1, 65530+i, 1000+uint32(i)*3000) // wraps
	}
	if lastSeq != 3 { // 65530+9 wrapped
		t.Fatalf("first source rewritten: seq %d", lastSeq)
	}
	seq, ts := r.rewrite(2, 17, 5_000_000) // new source, unrelated numbering
	if seq != lastSeq+1 || ts != lastTS+3000 {
		t.Fatalf("after switch: seq %d ts %d, want %d %d", seq, ts, lastSeq+1, lastTS+3000)
	}
	seq2, _ := r.rewrite(2, 18, 5_003_000)
	if seq2 != seq+1 {
		t.Fatalf("second packet of new source: %d, want %d", seq2, seq+1)
	}
	// A late (reordered) packet of the new source maps behind, not ahead.
	if late, _ := r.rewrite(2, 16, 4_997_000); late != seq-1 {
		t.Fatalf("reordered packet: %d, want %d", late, seq-1)
	}
	// The same SSRC restarting (sourceChanged) also continues the sequence.
	r.sourceChanged()
	if s3, _ := r.rewrite(2, 1, 0); s3 != seq2+1 {
		t.Fatalf("restart of same ssrc: %d, want %d", s3, seq2+1)
	}
}

func TestDupFilter(t *testing.T) {
	var d dupFilter
	for _, c := range []struct {
		seq  uint16
		want bool
	}{
		{100, true}, {101, true}, {101, false}, {103, true}, {102, true}, {102, false},
		{100, false}, {65535 - 2000, false}, // far in the past
		{3000, true}, {103, false} /* now out of window */, {2999, true}, {2999, false},
	} {
		if got := d.accept(c.seq); got != c.want {
			t.Fatalf("accept(%d) = %v, want %v", c.seq, got, c.want)
		}
	}
	// Wrap-around.
	var w dupFilter
	for _, s := range []uint16{65534, 65535, 0, 1} {
		if !w.accept(s) {
			t.Fatalf("wrap: %d refused", s)
		}
	}
	if w.accept(65535) {
		t.Fatal("wrap: duplicate 65535 accepted")
	}
}

func TestKeyframeThrottle(t *testing.T) {
	var sent atomic.Int32
	k := newKeyframeThrottle(100*time.Millisecond, func() { sent.Add(1) })
	defer k.close()
	k.request() // goes out at once
	if sent.Load() != 1 {
		t.Fatal("first request not sent immediately")
	}
	for i := 0; i < 50; i++ { // coalesced into one deferred request
		k.request()
	}
	if sent.Load() != 1 {
		t.Fatal("requests inside the interval were not held back")
	}
	time.Sleep(180 * time.Millisecond)
	if got := sent.Load(); got != 2 {
		t.Fatalf("after the interval: %d requests sent, want 2 (the held one)", got)
	}
	k.close()
	k.request()
	if sent.Load() != 2 {
		t.Fatal("request after close was sent")
	}
}
