package signaling

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestSessionTransitions(t *testing.T) {
	A, D, E := stateAttached, stateDetached, stateEnded
	cases := []struct {
		from sessionState
		ev   sessionEvent
		to   sessionState
		ok   bool
	}{
		{A, evDrop, D, true},
		{A, evResume, A, true}, // the old connection is still open: replaced
		{A, evExpire, A, false},
		{A, evEnd, E, true},
		{D, evDrop, D, false},
		{D, evResume, A, true},
		{D, evExpire, E, true},
		{D, evEnd, E, true},
		{E, evDrop, E, false},
		{E, evResume, E, false},
		{E, evExpire, E, false},
		{E, evEnd, E, false},
	}
	for _, tc := range cases {
		to, ok := transition(tc.from, tc.ev)
		if to != tc.to || ok != tc.ok {
			t.Errorf("%v + event %d = %v, %v; want %v, %v", tc.from, tc.ev, to, ok, tc.to, tc.ok)
		}
	}
}

// fakeTimers records the timers a session starts; tests fire them by hand.
type fakeTimers struct {
	timers []*fakeTimer
	fired  []uint64 // epochs passed to expire
}

type fakeTimer struct {
	d       time.Duration
	f       func()
	stopped bool
}

func (ft *fakeTimer) Stop() bool { was := !ft.stopped; ft.stopped = true; return was }

func (ft *fakeTimers) clock(maxQueue int) *sessionClock {
	return &sessionClock{grace: 15 * time.Second, maxQueue: maxQueue,
		after: func(d time.Duration, f func()) stopper {
			tm := &fakeTimer{d: d, f: f}
			ft.timers = append(ft.timers, tm)
			return tm
		},
		expire: func(_ *session, epoch uint64) { ft.fired = append(ft.fired, epoch) },
	}
}

func fakeClient() *client {
	return &client{send: make(chan outFrame, 16), kill: make(chan struct{})}
}

// drain returns the frames queued on c, batches flattened, as strings.
func drain(c *client) []string {
	var out []string
	for {
		select {
		case f := <-c.send:
			if f.data != nil {
				out = append(out, string(f.data))
			}
			for _, b := range f.batch {
				out = append(out, string(b))
			}
		default:
			return out
		}
	}
}

// TestSessionSequences drives a session through sequences of events. Ops:
// "send:x" enqueues frame x, "users:x" a users list x; "drop1"/"drop2" lose connection 1/2 without a
// close frame; "resume2"/"resume3" attach connection 2/3 (reply "R");
// "end1"/"end2" end through a connection's close frame, "end" from the
// server; "fire:N" fires the Nth timer started (from 0) and applies its expiry.
func TestSessionSequences(t *testing.T) {
	cases := []struct {
		name  string
		queue int
		ops   string
		want  sessionState
		got   map[int]string // frames each connection received, joined by ","
		log   string         // results of the ops, joined by " "
	}{
		{name: "attached sends to its connection", ops: "send:a send:b",
			want: stateAttached, got: map[int]string{1: "a,b"}},
		{name: "drop queues, resume delivers reply then queue in order",
			ops: "send:a drop1 send:b send:c resume2 send:d", want: stateAttached,
			got: map[int]string{1: "a", 2: "R,b,c,d"}, log: "drop1=true resume2=true(old=false)"},
		{name: "grace expiry ends", ops: "drop1 send:x fire:0", want: stateEnded,
			log: "drop1=true fire:0=true"},
		{name: "timer that fires after a resume does nothing", ops: "drop1 resume2 fire:0",
			want: stateAttached, got: map[int]string{2: "R"}, log: "drop1=true resume2=true(old=false) fire:0=false"},
		{name: "first timer does not end the second detachment",
			ops: "drop1 resume2 drop2 fire:0 fire:1", want: stateEnded,
			got: map[int]string{2: "R"}, log: "drop1=true resume2=true(old=false) drop2=true fire:0=false fire:1=true"},
		{name: "queue overflow ends at once", queue: 2, ops: "drop1 send:a send:b send:c send:d fire:1",
			want: stateEnded, log: "drop1=true fire:1=true"},
		{name: "overflowed session cannot be resumed", queue: 1, ops: "drop1 send:a send:b resume2",
			want: stateDetached, log: "drop1=true resume2=false(old=false)"},
		{name: "close frame ends at once", ops: "end1 send:x", want: stateEnded, log: "end1=true"},
		{name: "close of a detached session's old connection is ignored", ops: "drop1 end1",
			want: stateDetached, log: "drop1=true end1=false"},
		{name: "resume while the old connection is open replaces it", ops: "resume2 drop1 end1 send:x",
			want: stateAttached, got: map[int]string{2: "R,x"}, log: "resume2=true(old=true) drop1=false end1=false"},
		{name: "resume after the end fails", ops: "drop1 fire:0 resume2", want: stateEnded,
			log: "drop1=true fire:0=true resume2=false(old=false)"},
		{name: "server ends a detached session", ops: "drop1 end resume2", want: stateEnded,
			log: "drop1=true end=true resume2=false(old=false)"},
		{name: "only the latest users list is queued", queue: 3,
			ops:  "users:u0 drop1 users:u1 send:a users:u2 send:b users:u3 users:u4 resume2 users:u5",
			want: stateAttached, got: map[int]string{1: "u0", 2: "R,a,b,u4,u5"}},
		{name: "users list after an overflow", queue: 2, ops: "drop1 users:u1 send:a send:b users:u2 send:c fire:1",
			want: stateEnded, log: "drop1=true fire:1=true"},
		{name: "drop twice", ops: "drop1 drop1", want: stateDetached, log: "drop1=true drop1=false"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ft fakeTimers
			if tc.queue == 0 {
				tc.queue = 256
			}
			conns := map[int]*client{1: fakeClient(), 2: fakeClient(), 3: fakeClient()}
			ss := newSession("alice", conns[1], ft.clock(tc.queue))
			var log []string
			firedTimers := map[int]bool{}
			for _, op := range strings.Fields(tc.ops) {
				var n int
				switch {
				case strings.HasPrefix(op, "send:"):
					ss.enqueue([]byte(strings.TrimPrefix(op, "send:")))
				case strings.HasPrefix(op, "users:"):
					ss.enqueueUsers([]byte(strings.TrimPrefix(op, "users:")))
				case strings.HasPrefix(op, "fire:"):
					fmt.Sscanf(op, "fire:%d", &n)
					// A timer may fire although stopped (it fired just before).
					firedTimers[n] = true
					ft.timers[n].f()
					log = append(log, fmt.Sprintf("%s=%v", op, ss.expired(ft.fired[len(ft.fired)-1])))
				case op == "end":
					log = append(log, fmt.Sprintf("%s=%v", op, ss.end(nil)))
				default:
					fmt.Sscanf(op[len(op)-1:], "%d", &n)
					switch op[:len(op)-1] {
					case "drop":
						log = append(log, fmt.Sprintf("%s=%v", op, ss.detach(conns[n])))
					case "end":
						log = append(log, fmt.Sprintf("%s=%v", op, ss.end(conns[n])))
					case "resume":
						old, ok := ss.attach(conns[n], []byte("R"))
						log = append(log, fmt.Sprintf("%s=%v(old=%v)", op, ok, old != nil))
					default:
						t.Fatalf("bad op %q", op)
					}
				}
			}
			if s := ss.current(); s != tc.want {
				t.Errorf("state %v, want %v", s, tc.want)
			}
			if got := strings.Join(log, " "); tc.log != "" && got != tc.log {
				t.Errorf("results %q, want %q", got, tc.log)
			}
			for i, c := range conns {
				if got := strings.Join(drain(c), ","); got != tc.got[i] {
					t.Errorf("connection %d got %q, want %q", i, got, tc.got[i])
				}
			}
			// A session that is not detached has no timer left running.
			if ss.current() != stateDetached {
				for i, tm := range ft.timers {
					if !tm.stopped && !firedTimers[i] {
						t.Errorf("timer %d left running", i)
					}
				}
			}
			if len(ft.timers) > 0 && ft.timers[0].d != 15*time.Second {
				t.Errorf("grace timer %v", ft.timers[0].d)
			}
		})
	}
}
