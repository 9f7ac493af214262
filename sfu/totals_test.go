package sfu

import (
	"testing"
	"time"

	"videochat/internal/rtctest"
)

// TestTotalsOnlyGrow: the SFU's totals include the live participants'
// numbers and keep those of participants that left, so a counter built on
// them never goes down when a call ends.
func TestTotalsOnlyGrow(t *testing.T) {
	a, b, call := aliceSendsToBob(t, "totals")
	s := call.sfu
	l := s.Load()
	if l.Calls != 1 || l.Participants != 2 {
		t.Fatalf("load %+v", l)
	}
	live := s.Totals()
	if live.ReceivedPackets == 0 || live.ForwardedPackets == 0 || live.ForwardedBytes == 0 {
		t.Fatalf("live totals %+v", live)
	}
	if err := b.SendPLI(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Totals().PLIsReceived == 0 {
		if time.Now().After(deadline) {
			t.Fatal("PLI from the subscriber not counted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	before := s.Totals()
	b.part.Close()
	a.part.Close()
	call.Close()
	after := s.Totals()
	if s.Load().Participants != 0 {
		t.Fatalf("participants left: %+v", s.Load())
	}
	if after.ReceivedPackets < before.ReceivedPackets || after.ForwardedPackets < before.ForwardedPackets ||
		after.ForwardedBytes < before.ForwardedBytes || after.PLIsReceived < before.PLIsReceived {
		t.Fatalf("totals went down when the call ended:\nbefore %+v\nafter  %+v", before, after)
	}
	// Nothing moves any more.
	if again := s.Totals(); again != after {
		t.Fatalf("totals changed after the call: %+v -> %+v", after, again)
	}
}

// TestConnectObserverHearsSetupTime: a Signaler that implements
// ConnectObserver hears the setup time once, when media first connects.
func TestConnectObserverHearsSetupTime(t *testing.T) {
	s := newTestSFU(t)
	call := s.NewCall("setup")
	t.Cleanup(call.Close)
	c := joinWith(t, call, "alice", true, rtctest.Options{})
	sig := c.sig
	waitConnected(t, "alice", c, 10*time.Second)
	select {
	case d := <-sig.setup:
		// Loopback ICE-lite + DTLS: measured 20-400 ms here; 10 s is the
		// bound of a broken setup, not a performance limit.
		if d <= 0 || d > 10*time.Second {
			t.Fatalf("setup %v", d)
		}
		t.Logf("setup %v", d)
	case <-time.After(10 * time.Second):
		t.Fatal("Connected not called")
	}
	select {
	case d := <-sig.setup:
		t.Fatalf("Connected called twice (%v)", d)
	case <-time.After(200 * time.Millisecond):
	}
}
