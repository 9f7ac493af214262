package sfu

import (
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// fakeClock is an afterFunc whose timers fire only when the test advances it.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Duration
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Duration
	f       func()
	stopped bool
}

func (c *fakeClock) after(d time.Duration, f func()) func() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now + d, f: f}
	c.timers = append(c.timers, t)
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		was := !t.stopped
		t.stopped = true
		return was
	}
}

// advance moves time on by d and fires, in order, the timers that are due.
func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now += d
	var due []*fakeTimer
	kept := c.timers[:0]
	for _, t := range c.timers {
		switch {
		case t.stopped:
		case t.at <= c.now:
			t.stopped = true
			due = append(due, t)
		default:
			kept = append(kept, t)
		}
	}
	c.timers = kept
	c.mu.Unlock()
	slices.SortFunc(due, func(a, b *fakeTimer) int { return int(a.at - b.at) })
	for _, t := range due {
		t.f()
	}
}

// pending is the number of armed timers.
func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped {
			n++
		}
	}
	return n
}

// eventLog is a Signaler that records Interrupted, Restored and Failed.
type eventLog struct {
	mu      sync.Mutex
	events  []string
	errs    []error
	changed chan struct{}
}

func newEventLog() *eventLog { return &eventLog{changed: make(chan struct{}, 1)} }

func (e *eventLog) add(ev string, err error) {
	e.mu.Lock()
	e.events = append(e.events, ev)
	if err != nil {
		e.errs = append(e.errs, err)
	}
	e.mu.Unlock()
	select {
	case e.changed <- struct{}{}:
	default:
	}
}

func (e *eventLog) SendDescription(webrtc.SessionDescription) {}
func (e *eventLog) SendCandidate(webrtc.ICECandidateInit)     {}
func (e *eventLog) Interrupted()                              { e.add("interrupted", nil) }
func (e *eventLog) Restored()                                 { e.add("restored", nil) }
func (e *eventLog) Failed(err error)                          { e.add("failed", err) }

func (e *eventLog) get() ([]string, []error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.events...), append([]error(nil), e.errs...)
}

func (e *eventLog) String() string {
	ev, _ := e.get()
	return strings.Join(ev, ",")
}

// waitFor waits until the log holds want (as a prefix) or timeout passes.
func (e *eventLog) waitFor(t *testing.T, timeout time.Duration, want ...string) time.Duration {
	t.Helper()
	start := time.Now()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ev, _ := e.get()
		if len(ev) >= len(want) && slices.Equal(ev[:len(want)], want) {
			return time.Since(start)
		}
		select {
		case <-e.changed:
		case <-deadline.C:
			t.Fatalf("events %v, want %v within %v", ev, want, timeout)
		}
	}
}

func newTestLifecycle() (*lifecycle, *eventLog, *fakeClock) {
	clk := &fakeClock{}
	ev := newEventLog()
	cfg := Config{ICEFailedTimeout: 15 * time.Second, ConnectTimeout: 30 * time.Second, afterFunc: clk.after}
	return newLifecycle(ev, cfg), ev, clk
}

const (
	stNew          = webrtc.PeerConnectionStateNew
	stConnecting   = webrtc.PeerConnectionStateConnecting
	stConnected    = webrtc.PeerConnectionStateConnected
	stDisconnected = webrtc.PeerConnectionStateDisconnected
	stFailed       = webrtc.PeerConnectionStateFailed
	stClosed       = webrtc.PeerConnectionStateClosed
)

func TestLifecycle(t *testing.T) {
	type step struct {
		state   webrtc.PeerConnectionState // applied unless advance is set
		remote  bool                       // remoteSet instead of a state
		dtls    bool                       // DTLS failed
		advance time.Duration              // advance the fake clock instead
	}
	s := func(st webrtc.PeerConnectionState) step { return step{state: st} }
	adv := func(d time.Duration) step { return step{advance: d} }
	remote := step{remote: true}
	tests := []struct {
		name    string
		steps   []step
		want    []string
		wantErr error
	}{
		{"ringing callee is never failed", []step{s(stNew), adv(time.Hour)}, nil, nil},
		{"connect deadline counts from the remote description",
			[]step{adv(time.Hour), remote, s(stConnecting), adv(29 * time.Second), adv(2 * time.Second)}, []string{"failed"}, ErrConnectTimeout},
		{"connected in time", []step{remote, s(stConnecting), adv(29 * time.Second), s(stConnected), adv(time.Hour)}, nil, nil},
		{"pion failed before connecting waits for the deadline",
			[]step{remote, s(stFailed), adv(29 * time.Second)}, nil, nil},
		{"lost and restored", []step{remote, s(stConnected), s(stDisconnected), adv(10 * time.Second), s(stConnecting), s(stConnected), adv(time.Hour)},
			[]string{"interrupted", "restored"}, nil},
		{"pion failed does not end the call before the grace",
			[]step{remote, s(stConnected), s(stDisconnected), adv(5 * time.Second), s(stFailed), adv(9 * time.Second), s(stConnecting), s(stConnected)},
			[]string{"interrupted", "restored"}, nil},
		{"lost for good", []step{remote, s(stConnected), s(stDisconnected), adv(14 * time.Second), s(stFailed), adv(2 * time.Second), s(stConnected)},
			[]string{"interrupted", "failed"}, ErrICELost},
		{"quick ICE restart is silent", []step{remote, s(stConnected), s(stConnecting), adv(time.Second), s(stConnected), adv(time.Hour)}, nil, nil},
		{"slow ICE restart is an interruption", []step{remote, s(stConnected), s(stConnecting), adv(6 * time.Second), s(stConnected)},
			[]string{"interrupted", "restored"}, nil},
		{"ICE restart that never completes", []step{remote, s(stConnected), s(stConnecting), adv(16 * time.Second)},
			[]string{"interrupted", "failed"}, ErrICELost},
		{"repeated losses, one interruption each", []step{remote, s(stConnected), s(stDisconnected), s(stFailed), s(stDisconnected), s(stConnected), s(stDisconnected), s(stConnected)},
			[]string{"interrupted", "restored", "interrupted", "restored"}, nil},
		{"grace restarts after a recovery", []step{remote, s(stConnected), s(stDisconnected), adv(14 * time.Second), s(stConnected), s(stDisconnected), adv(14 * time.Second), s(stConnected)},
			[]string{"interrupted", "restored", "interrupted", "restored"}, nil},
		{"DTLS failure is final", []step{remote, {state: stFailed, dtls: true}, s(stConnected)}, []string{"failed"}, ErrDTLSFailed},
		{"closed by pion", []step{remote, s(stConnected), s(stClosed)}, []string{"failed"}, ErrPCClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, ev, clk := newTestLifecycle()
			for _, st := range tc.steps {
				switch {
				case st.advance > 0:
					clk.advance(st.advance)
				case st.remote:
					l.remoteSet()
				default:
					l.update(st.state, st.dtls)
				}
			}
			got, errs := ev.get()
			if !slices.Equal(got, tc.want) {
				t.Fatalf("events %v, want %v", got, tc.want)
			}
			if tc.wantErr != nil && (len(errs) != 1 || !errors.Is(errs[0], tc.wantErr)) {
				t.Fatalf("Failed with %v, want %v", errs, tc.wantErr)
			}
			l.close()
			if n := clk.pending(); n != 0 {
				t.Fatalf("%d timers armed after close", n)
			}
		})
	}
}

func TestLifecycleCloseStopsTimers(t *testing.T) {
	l, ev, clk := newTestLifecycle()
	l.remoteSet()
	l.update(stConnected, false)
	l.update(stDisconnected, false)
	l.close()
	clk.advance(time.Hour)
	l.update(stClosed, false) // pion reports the close we made
	if got, _ := ev.get(); !slices.Equal(got, []string{"interrupted"}) {
		t.Fatalf("events %v after close, want only the interruption before it", got)
	}
}

func TestCandidateUfrag(t *testing.T) {
	u := "abcd"
	for _, tc := range []struct {
		c    webrtc.ICECandidateInit
		want string
	}{
		{webrtc.ICECandidateInit{Candidate: "candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host"}, ""},
		{webrtc.ICECandidateInit{Candidate: "candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host generation 0 ufrag wxyz network-id 1"}, "wxyz"},
		{webrtc.ICECandidateInit{Candidate: "candidate:1 1 udp 2130706431 10.0.0.1 5000 typ host ufrag wxyz", UsernameFragment: &u}, "abcd"},
		{webrtc.ICECandidateInit{Candidate: "candidate:1 1 udp 1 1.2.3.4 5 typ srflx raddr 0.0.0.0 rport 0 ufrag q"}, "q"},
	} {
		if got := candidateUfrag(tc.c); got != tc.want {
			t.Errorf("candidateUfrag(%q) = %q, want %q", tc.c.Candidate, got, tc.want)
		}
	}
}
