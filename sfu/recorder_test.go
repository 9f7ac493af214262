package sfu

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// fakeRecorder records what the hook delivers; delay slows every write.
type fakeRecorder struct {
	delay time.Duration
	fail  bool

	mu     sync.Mutex
	tracks []*fakeTrackWriter
}

func (r *fakeRecorder) StartTrack(info TrackInfo) TrackWriter {
	r.mu.Lock()
	defer r.mu.Unlock()
	w := &fakeTrackWriter{info: info, rec: r}
	r.tracks = append(r.tracks, w)
	return w
}

func (r *fakeRecorder) writers() []*fakeTrackWriter {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*fakeTrackWriter(nil), r.tracks...)
}

type fakeTrackWriter struct {
	info         TrackInfo
	rec          *fakeRecorder
	packets, srs atomic.Int64
	closed       atomic.Bool
}

func (w *fakeTrackWriter) WriteRTP(pkt []byte) error {
	if w.rec.fail {
		return errors.New("no space left on device")
	}
	time.Sleep(w.rec.delay)
	w.packets.Add(1)
	return nil
}

func (w *fakeTrackWriter) SenderReport(uint64, uint32) { w.srs.Add(1) }
func (w *fakeTrackWriter) Close() error                { w.closed.Store(true); return nil }

func recordedCall(t *testing.T, rec *fakeRecorder) (*testClient, *testClient, *Call) {
	t.Helper()
	a, b, call := callWithRecorder(t, rec, "rec")
	call.StartRecording() // before any track: each is recorded from its start
	return a, b, call
}

// callWithRecorder joins alice and bob to a call of an SFU with rec; nothing
// is recorded until StartRecording.
func callWithRecorder(t *testing.T, rec Recorder, id string) (*testClient, *testClient, *Call) {
	t.Helper()
	verifyNoLeaks(t)
	s, err := New(Config{IncludeLoopback: true, Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	call := s.NewCall(id)
	t.Cleanup(call.Close)
	return join(t, s, call, "alice", true), join(t, s, call, "bob", false), call
}

// TestNoRecordingBeforeConsent: while the callee has not accepted (no
// StartRecording), media flows but nothing reaches the recorder; once it
// starts, the running tracks are recorded.
func TestNoRecordingBeforeConsent(t *testing.T) {
	rec := &fakeRecorder{}
	a, b, call := callWithRecorder(t, rec, "consent")
	defer a.StartSending()()
	defer b.StartSending()()
	if err := b.WaitPackets(webrtc.RTPCodecTypeVideo, 100, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitPackets(webrtc.RTPCodecTypeVideo, 100, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if n := len(rec.writers()); n != 0 {
		t.Fatalf("the recorder saw %d tracks before recording started", n)
	}
	call.StartRecording()
	call.StartRecording() // idempotent
	deadline := time.Now().Add(10 * time.Second)
	for {
		ws, ok := rec.writers(), true
		for _, w := range ws {
			ok = ok && w.packets.Load() >= 20
		}
		if len(ws) == 4 && ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after StartRecording the recorder has %d tracks", len(ws))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRecorderSeesEveryTrack(t *testing.T) {
	rec := &fakeRecorder{}
	a, b, call := recordedCall(t, rec)
	defer a.StartSending()()
	defer b.StartSending()()
	if err := b.WaitPackets(webrtc.RTPCodecTypeVideo, 100, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := a.WaitPackets(webrtc.RTPCodecTypeVideo, 100, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ws := rec.writers()
	if len(ws) != 4 {
		t.Fatalf("recorder saw %d tracks, want 4 (audio+video of two participants)", len(ws))
	}
	for _, w := range ws {
		if w.info.CallID != "rec" || w.info.Participant == "" || w.info.RequestKeyframe == nil {
			t.Errorf("track info %+v", w.info)
		}
		if w.packets.Load() < 50 {
			t.Errorf("%s %s: recorder got %d packets", w.info.Participant, w.info.Kind, w.packets.Load())
		}
	}
	call.Close()
	for _, w := range ws {
		if !w.closed.Load() {
			t.Errorf("%s %s: writer not closed when the call ended", w.info.Participant, w.info.Kind)
		}
	}
}

func TestSlowOrFailingRecorderDoesNotDisturbForwarding(t *testing.T) {
	for name, rec := range map[string]*fakeRecorder{
		"slow":    {delay: 100 * time.Millisecond},
		"failing": {fail: true},
	} {
		t.Run(name, func(t *testing.T) {
			a, b, _ := recordedCall(t, rec)
			defer a.StartSending()()
			start := time.Now()
			// 50 packets/s are sent: 100 packets must arrive in about 2 s.
			if err := b.WaitPackets(webrtc.RTPCodecTypeVideo, 100, 4*time.Second); err != nil {
				t.Fatal(err)
			}
			if d := time.Since(start); d > 3500*time.Millisecond {
				t.Fatalf("forwarding slowed down to %v for 100 packets", d)
			}
			for _, w := range rec.writers() {
				if name == "slow" && w.packets.Load() > 60 {
					t.Errorf("slow writer kept up: %d packets", w.packets.Load())
				}
			}
		})
	}
}
