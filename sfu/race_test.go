package sfu

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// Subscription races (issue 10), driven without a network: participants
// with real (never negotiated) PeerConnections and upTracks that are never
// read, published through Call.publish as onTrack does.

func fakeUpTrack(kind webrtc.RTPCodecType) *upTrack {
	return &upTrack{kind: kind, kf: newKeyframeThrottle(time.Hour, func() {}), epoch: time.Now()}
}

// sinkCount is how many times up feeds d.
func sinkCount(up *upTrack, d *downTrack) int {
	n := 0
	for _, s := range up.loadSinks() {
		if s == d {
			n++
		}
	}
	return n
}

// mustJoin joins a participant that is never negotiated. It panics on
// error, as it runs on goroutines other than the test's too.
func mustJoin(_ *testing.T, c *Call, name string) *Participant {
	p, err := c.Join(name, newEventLog())
	if err != nil {
		panic(fmt.Sprintf("join %s: %v", name, err))
	}
	return p
}

func TestAddSinkRefusesDuplicate(t *testing.T) {
	up := fakeUpTrack(webrtc.RTPCodecTypeVideo)
	d := newDownTrack(webrtc.RTPCodecTypeVideo, "s", nil)
	if !up.addSink(d) || up.addSink(d) {
		t.Fatal("addSink: want true then false")
	}
	if n := sinkCount(up, d); n != 1 {
		t.Fatalf("sink subscribed %d times", n)
	}
	if !up.removeSink(d) || up.removeSink(d) {
		t.Fatal("removeSink: want true then false")
	}
	if d.source.Load() != nil {
		t.Fatal("source not cleared")
	}
}

// Join and publish at once: the joiner is subscribed exactly once,
// whichever runs first.
func TestRaceJoinPublish(t *testing.T) {
	s := newTestSFU(t)
	for i := range 100 { // without the call's subscription lock, about one round in 200 misses or doubles
		call := s.NewCall(fmt.Sprint("jp", i))
		a := mustJoin(t, call, "a")
		ups := []*upTrack{fakeUpTrack(webrtc.RTPCodecTypeAudio), fakeUpTrack(webrtc.RTPCodecTypeVideo)}
		var b *Participant
		var wg sync.WaitGroup
		wg.Add(3)
		go func() { defer wg.Done(); b = mustJoin(t, call, "b") }()
		for _, up := range ups {
			go func() { defer wg.Done(); call.publish(a, up) }()
		}
		wg.Wait()
		for _, up := range ups {
			if n := sinkCount(up, b.down[up.kind]); n != 1 {
				t.Fatalf("round %d: %s subscribed %d times", i, up.kind, n)
			}
			if n := len(up.loadSinks()); n != 1 {
				t.Fatalf("round %d: %s has %d sinks, want 1", i, up.kind, n)
			}
		}
		call.Close()
	}
}

// remove and publish at once: a leaving participant is never subscribed
// after its removal, and nothing it publishes while leaving reaches anyone.
func TestRaceRemovePublish(t *testing.T) {
	s := newTestSFU(t)
	for i := range 30 {
		call := s.NewCall(fmt.Sprint("rp", i))
		a, b := mustJoin(t, call, "a"), mustJoin(t, call, "b")
		upA, upB := fakeUpTrack(webrtc.RTPCodecTypeVideo), fakeUpTrack(webrtc.RTPCodecTypeVideo)
		var wg sync.WaitGroup
		wg.Add(3)
		go func() { defer wg.Done(); b.Close() }()
		go func() { defer wg.Done(); call.publish(a, upA) }()
		go func() { defer wg.Done(); call.publish(b, upB) }()
		wg.Wait()
		if n := len(upA.loadSinks()); n != 0 {
			t.Fatalf("round %d: a's track feeds %d sinks after b left", i, n)
		}
		if n := len(upB.loadSinks()); n != 0 {
			t.Fatalf("round %d: the leaver's track feeds %d sinks", i, n)
		}
		if src := a.down[webrtc.RTPCodecTypeVideo].source.Load(); src != nil {
			t.Fatalf("round %d: a's downTrack still has a source", i)
		}
		call.Close()
	}
}

// Many joins, publishes and leaves at once in one call: afterwards every
// track feeds exactly the current other participants, once each.
func TestRaceChurn(t *testing.T) {
	s := newTestSFU(t)
	call := s.NewCall("churn")
	defer call.Close()
	stay := mustJoin(t, call, "stay")
	var wg sync.WaitGroup
	var mu sync.Mutex
	var left []*Participant
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := mustJoin(t, call, fmt.Sprint("p", i))
			var inner sync.WaitGroup
			for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
				inner.Add(1)
				go func() { defer inner.Done(); call.publish(p, fakeUpTrack(kind)) }()
			}
			if i%2 == 0 {
				p.Close()
				mu.Lock()
				left = append(left, p)
				mu.Unlock()
			}
			inner.Wait()
		}()
		wg.Add(1)
		go func() { defer wg.Done(); call.publish(stay, fakeUpTrack(webrtc.RTPCodecTypeVideo)) }()
	}
	wg.Wait()
	parts, _ := call.othersOf(nil)
	for _, p := range parts {
		for _, up := range p.upTracks() {
			for _, o := range parts {
				want := 1
				if o == p {
					want = 0
				}
				if n := sinkCount(up, o.down[up.kind]); n != want {
					t.Fatalf("%s's %s feeds %s %d times, want %d", p.name, up.kind, o.name, n, want)
				}
			}
			for _, l := range left {
				if n := sinkCount(up, l.down[up.kind]); n != 0 {
					t.Fatalf("%s's %s feeds %s, who left", p.name, up.kind, l.name)
				}
			}
			if n := len(up.loadSinks()); n != len(parts)-1 {
				t.Fatalf("%s's %s has %d sinks, want %d", p.name, up.kind, n, len(parts)-1)
			}
		}
	}
	if n := len(stay.upTracks()); n != 1 {
		t.Fatalf("stay has %d video tracks, want 1 (the last replaces the others)", n)
	}
}

// A second track of the same kind takes over the first's subscribers.
func TestSecondTrackReplacesFirst(t *testing.T) {
	s := newTestSFU(t)
	call := s.NewCall("replace")
	defer call.Close()
	a, b := mustJoin(t, call, "a"), mustJoin(t, call, "b")
	first, second := fakeUpTrack(webrtc.RTPCodecTypeVideo), fakeUpTrack(webrtc.RTPCodecTypeVideo)
	audio := fakeUpTrack(webrtc.RTPCodecTypeAudio)
	call.publish(a, first)
	call.publish(a, audio)
	call.publish(a, second)
	d := b.down[webrtc.RTPCodecTypeVideo]
	if n := len(first.loadSinks()); n != 0 {
		t.Fatalf("replaced track still feeds %d sinks", n)
	}
	if sinkCount(second, d) != 1 || d.source.Load() != second {
		t.Fatal("new track does not feed b")
	}
	if sinkCount(audio, b.down[webrtc.RTPCodecTypeAudio]) != 1 {
		t.Fatal("audio lost its subscriber")
	}
	// A newcomer gets the current tracks only.
	c := mustJoin(t, call, "c")
	if sinkCount(first, c.down[webrtc.RTPCodecTypeVideo]) != 0 || sinkCount(second, c.down[webrtc.RTPCodecTypeVideo]) != 1 {
		t.Fatal("newcomer subscribed to the replaced track")
	}
}

func TestSFUCloseClosesCalls(t *testing.T) {
	s, err := New(Config{IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	c1, c2 := s.NewCall("x"), s.NewCall("y")
	ps := []*Participant{mustJoin(t, c1, "a"), mustJoin(t, c1, "b"), mustJoin(t, c2, "c")}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		if st := p.pc.ConnectionState(); st != webrtc.PeerConnectionStateClosed {
			t.Errorf("%s: peer connection %s after SFU.Close", p.name, st)
		}
	}
	if _, err := c1.Join("late", newEventLog()); !errors.Is(err, ErrClosed) {
		t.Errorf("join of a call after SFU.Close: %v, want ErrClosed", err)
	}
	if _, err := s.NewCall("z").Join("late", newEventLog()); !errors.Is(err, ErrClosed) {
		t.Errorf("join of a new call after SFU.Close: %v, want ErrClosed", err)
	}
	s.mu.Lock()
	n := len(s.calls)
	s.mu.Unlock()
	if n != 0 {
		t.Errorf("SFU still tracks %d calls", n)
	}
}
