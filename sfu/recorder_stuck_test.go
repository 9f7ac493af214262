package sfu

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
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

// A recording whose disk hangs for good must not hold up hang-up or the
// end of the call: each finishes within the queue's stop bound.
func TestStuckRecorderDoesNotStallHangupOrShutdown(t *testing.T) {
	rec := newStuckRecorder(t)
	a, b, call := callWithRecorder(t, rec, "stuck")
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

	start := time.Now()
	a.part.Close() // alice hangs up
	hangup := time.Since(start)
	if hangup > stuckTeardownBound {
		t.Fatalf("hang-up took %v with a stuck recorder, bound %v", hangup, stuckTeardownBound)
	}
	start = time.Now()
	call.Close() // shutdown ends the call
	shutdown := time.Since(start)
	if shutdown > stuckTeardownBound {
		t.Fatalf("closing the call took %v with a stuck recorder, bound %v", shutdown, stuckTeardownBound)
	}
	t.Logf("with a writer blocked forever: hang-up %v, call close %v (bound %v)",
		hangup.Round(time.Millisecond), shutdown.Round(time.Millisecond), stuckTeardownBound)
}
