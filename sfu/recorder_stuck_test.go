package sfu

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
)

// stuckRecorder's writers block forever (a hung disk) in WriteRTP until
// release is closed.
type stuckRecorder struct {
	release chan struct{}
	entered chan struct{} // closed when a writer first blocks
	once    sync.Once

	mu      sync.Mutex
	writers []*stuckWriter
}

func newStuckRecorder(t *testing.T) *stuckRecorder {
	r := &stuckRecorder{release: make(chan struct{}), entered: make(chan struct{})}
	// Registered first, so it runs last: after the calls are closed, let
	// the abandoned writers return and wait until every one was closed.
	t.Cleanup(func() {
		close(r.release)
		r.mu.Lock()
		ws := append([]*stuckWriter(nil), r.writers...)
		r.mu.Unlock()
		for _, w := range ws {
			select {
			case <-w.closed:
			case <-time.After(5 * time.Second):
				t.Errorf("released writer %s %s never closed", w.info.Participant, w.info.Kind)
			}
		}
	})
	return r
}

func (r *stuckRecorder) StartTrack(info TrackInfo) TrackWriter {
	w := &stuckWriter{r: r, info: info, closed: make(chan struct{})}
	r.mu.Lock()
	r.writers = append(r.writers, w)
	r.mu.Unlock()
	return w
}

type stuckWriter struct {
	r      *stuckRecorder
	info   TrackInfo
	closed chan struct{}
	once   sync.Once
}

func (w *stuckWriter) WriteRTP([]byte) error {
	w.r.once.Do(func() { close(w.r.entered) })
	<-w.r.release
	return nil
}
func (w *stuckWriter) SenderReport(uint64, uint32) {}
func (w *stuckWriter) Close() error {
	w.once.Do(func() { close(w.closed) })
	return nil
}

// bound is the longest a teardown may take with a stuck writer: the queue's
// stop bound plus scheduling margin on a busy 2-core machine.
const stuckTeardownBound = recordStopBound + 1500*time.Millisecond

func TestRecordQueueStuckWriterStopsWithinBound(t *testing.T) {
	rec := newStuckRecorder(t)
	q := newRecordQueue(rec.StartTrack(TrackInfo{Participant: "unit"}))
	done := make(chan error, 1)
	go func() { done <- q.run() }()
	for range 2 * recordQueueLen { // fills the queue; the rest is dropped
		q.push([]byte{0x80, 96, 0, 1})
	}
	<-rec.entered
	start := time.Now()
	q.stop()
	select {
	case err := <-done:
		if !errors.Is(err, errWriterStuck) {
			t.Fatalf("run = %v, want errWriterStuck", err)
		}
		if d := time.Since(start); d < recordStopBound-100*time.Millisecond || d > stuckTeardownBound {
			t.Fatalf("run returned %v after stop, want about %v", d, recordStopBound)
		}
	case <-time.After(stuckTeardownBound):
		t.Fatal("run did not return after stop with a stuck writer")
	}
	q.push([]byte{0x80, 96, 0, 2}) // after abandoning: dropped, never blocks
	if q.dropped.Load() < recordQueueLen {
		t.Fatalf("dropped = %d, want at least %d", q.dropped.Load(), recordQueueLen)
	}
}

// A recording whose disk hangs for good must not hold up hang-up, the end
// of the call or the SFU's shutdown: each finishes within the queue's stop
// bound, and another call on the same SFU keeps its media flowing at the
// normal rate throughout.
func TestStuckRecorderDoesNotStallHangupOrShutdown(t *testing.T) {
	verifyNoLeaks(t)
	rec := newStuckRecorder(t)
	s, err := New(Config{IncludeLoopback: true, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = s.Close()
		}
	})
	call := s.NewCall("stuck")
	t.Cleanup(call.Close)
	a, b := join(t, s, call, "alice", true), join(t, s, call, "bob", false)
	beside := s.NewCall("beside")
	t.Cleanup(beside.Close)
	c, d := join(t, s, beside, "carol", true), join(t, s, beside, "dave", false)
	defer c.StartSending()()
	call.StartRecording()
	defer a.StartSending()()
	defer b.StartSending()()
	if err := b.WaitPackets(webrtc.RTPCodecTypeVideo, 50, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rec.entered:
	case <-time.After(5 * time.Second):
		t.Fatal("no writer received a packet")
	}
	// Forwarding is not disturbed by the stuck disk.
	if err := a.WaitPackets(webrtc.RTPCodecTypeVideo, 50, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := d.WaitPackets(webrtc.RTPCodecTypeVideo, 50, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	watch := watchRate(d.Peer, 500*time.Millisecond)

	start := time.Now()
	a.part.Close() // alice hangs up
	hangup := time.Since(start)
	if hangup > stuckTeardownBound {
		t.Fatalf("hang-up took %v with a stuck recorder, bound %v", hangup, stuckTeardownBound)
	}
	start = time.Now()
	call.Close() // the call ends
	callEnd := time.Since(start)
	if callEnd > stuckTeardownBound {
		t.Fatalf("closing the call took %v with a stuck recorder, bound %v", callEnd, stuckTeardownBound)
	}
	time.Sleep(time.Second) // the call beside goes on after the teardown
	slowest := watch()
	t.Logf("with a writer blocked forever: hang-up %v, call close %v (bound %v); the call beside: slowest 0.5 s %d video packets (25 sent)",
		hangup.Round(time.Millisecond), callEnd.Round(time.Millisecond), stuckTeardownBound, slowest)
	// Unloaded: 24-25 per half second; the sender shares this process.
	if slowest < 3 {
		t.Fatalf("the call beside stalled: %d packets in its slowest half second", slowest)
	}
	start = time.Now()
	closed = true
	_ = s.Close() // shutdown, with the call beside still running
	if sd := time.Since(start); sd > stuckTeardownBound {
		t.Fatalf("SFU shutdown took %v with a stuck recorder, bound %v", sd, stuckTeardownBound)
	}
}

// watchRate samples p's received video every window until the returned
// function is called; it returns the fewest packets in one window.
func watchRate(p interface {
	Received(webrtc.RTPCodecType) rtctest.Received
}, window time.Duration) func() int {
	stop, done := make(chan struct{}), make(chan struct{})
	slowest := 1 << 30
	go func() {
		defer close(done)
		last := p.Received(webrtc.RTPCodecTypeVideo).Packets
		tick := time.NewTicker(window)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			n := p.Received(webrtc.RTPCodecTypeVideo).Packets
			slowest = min(slowest, n-last)
			last = n
		}
	}()
	return func() int { close(stop); <-done; return slowest }
}
