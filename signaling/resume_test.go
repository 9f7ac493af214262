package signaling

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
)

// resume dials a new connection and sends resume with token; it returns
// the connection and the reply (the first frame on it).
func (e *env) resume(token string) (*conn, Message) {
	e.t.Helper()
	c := e.dial(nil)
	c.send(map[string]any{"type": "resume", "session": token})
	return c, c.nextAny()
}

func (c *conn) expectCallstate(name, state string) {
	c.t.Helper()
	m := c.expect(typeCallstate)
	if m.Name != name || m.State != state {
		c.t.Fatalf("callstate %+v, want %s %s", m, name, state)
	}
}

// resumeRefused checks that token is refused and the connection may still log in.
func (e *env) resumeRefused(token string) {
	e.t.Helper()
	c := e.dial(nil)
	c.send(map[string]any{"type": "resume", "session": token})
	c.expectResumeFailed()
	c.send(`{"type":"login","name":"after-refusal"}`)
	if m := c.expect(typeLogin); !*m.Success {
		e.t.Fatalf("login after a refused resume: %+v", m)
	}
	c.closeFrame()
}

func (c *conn) expectResumeFailed() {
	c.t.Helper()
	m := c.expect(typeResume)
	if m.Success == nil || *m.Success || m.Message == "" || m.Session != "" {
		c.t.Fatalf("resume reply %+v, want a refusal", m)
	}
}

// waitDetached waits until the server has noticed that name's connection is gone.
func (e *env) waitDetached(name string) {
	e.t.Helper()
	waitFor(e.t, func() bool {
		e.srv.mu.Lock()
		ss := e.srv.names[name]
		e.srv.mu.Unlock()
		return ss != nil && ss.current() == stateDetached
	})
}

func (e *env) online() []string {
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	var names []string
	for n := range e.srv.names {
		names = append(names, n)
	}
	return names
}

func TestLoginIssuesSessionToken(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	if len(a.session) < 22 || a.session == b.session {
		t.Fatalf("tokens %q %q: want distinct, at least 128 bits", a.session, b.session)
	}
}

func TestResumeAfterDropDeliversQueuedMessagesInOrder(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	e.connect(a, b, "alice", "bob")
	a.drop() // no close frame
	b.expectCallstate("alice", callReconnecting)

	// The name stays taken while the session waits.
	x := e.dial(nil)
	x.send(`{"type":"login","name":"alice"}`)
	if m := x.expect(typeLogin); *m.Success {
		t.Fatal("name of a detached session was given away")
	}
	// Frames for alice while she is away, from the media side and from bob.
	sig := e.media.peer("alice").sig
	for i := range 3 {
		sig.SendCandidate(webrtc.ICECandidateInit{Candidate: fmt.Sprintf("candidate:queued%d", i)})
	}
	b.send(`{"type":"leave","name":"alice"}`)
	waitFor(t, func() bool { return e.media.peer("alice").isClosed() }) // the call went on until the hang-up

	a2, m := e.resume(a.session)
	if m.Type != typeResume || m.Success == nil || !*m.Success || m.Name != "alice" || m.Call != "" { // bob hung up
		t.Fatalf("resume reply %+v", m)
	}
	if m.Session == "" || m.Session == a.session {
		t.Fatalf("resume reply carries token %q, want a fresh one", m.Session)
	}
	if len(m.ICEServers) != 1 || m.ICEServers[0].Username != "u-alice" {
		t.Fatalf("iceServers %+v", m.ICEServers)
	}
	for i := range 3 {
		if m := a2.expect(typeCandidate); m.Candidate.Candidate != fmt.Sprintf("candidate:queued%d", i) {
			t.Fatalf("queued candidate %d: %+v", i, m)
		}
	}
	if m := a2.expect(typeLeave); m.Name != "bob" || m.Reason != ReasonHangup {
		t.Fatalf("queued leave %+v", m)
	}
	// bob hung up before alice came back: he is not told she is connected.
	b.quiet(100 * time.Millisecond)

	// The resumed session works: a new call, and the old token is spent.
	e.connect(a2, b, "alice", "bob")
	e.resumeRefused(a.session)
}

func TestResumeInCallTellsOtherConnected(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	e.connect(a, b, "alice", "bob")
	a.drop()
	b.expectCallstate("alice", callReconnecting)
	a2, m := e.resume(a.session)
	if !*m.Success || m.Call != "bob" {
		t.Fatalf("resume reply %+v", m)
	}
	token := m.Session
	b.expectCallstate("alice", callConnected)
	// The call and its media went on.
	if e.media.peer("alice").isClosed() {
		t.Fatal("media closed during the grace period")
	}
	a2.send(`{"type":"leave","name":"bob"}`)
	if m := b.expect(typeLeave); m.Reason != ReasonHangup || m.Name != "alice" {
		t.Fatalf("leave %+v", m)
	}
	// Resuming again with the new token works too; now outside a call.
	a2.drop()
	_, m = e.resume(token)
	if !*m.Success || m.Call != "" {
		t.Fatalf("second resume %+v", m)
	}
	b.quiet(100 * time.Millisecond) // no callstate outside a call
}

func TestCloseFrameEndsSessionAtOnce(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	e.connect(a, b, "alice", "bob")
	a.closeFrame()
	if m := b.expect(typeLeave); m.Reason != ReasonGone || m.Name != "alice" {
		t.Fatalf("leave %+v", m)
	}
	b.waitUsers("bob")
	e.resumeRefused(a.session)
}

func TestResumeRefusals(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ResumeGrace = 300 * time.Millisecond })
	b := e.login("bob")

	// Unknown token; the connection may log in afterwards.
	c := e.dial(nil)
	c.send(`{"type":"resume","session":"not-a-token"}`)
	c.expectResumeFailed()
	c.send(`{"type":"resume"}`)
	c.expectError(`"session"`)
	c.send(`{"type":"resume","session":5}`)
	c.expectError(`"session"`)
	c.send(`{"type":"login","name":"carol"}`)
	if m := c.expect(typeLogin); !*m.Success {
		t.Fatalf("login after a refused resume: %+v", m)
	}
	// resume on a logged-in connection is an error.
	c.send(map[string]any{"type": "resume", "session": b.session})
	c.expectError("already logged in")

	// A spent token.
	a := e.login("alice")
	a.drop()
	a2, m := e.resume(a.session)
	if !*m.Success {
		t.Fatalf("resume %+v", m)
	}
	a3 := e.dial(nil)
	a3.send(map[string]any{"type": "resume", "session": a.session})
	a3.expectResumeFailed()
	a3.send(`{"type":"login","name":"dave"}`)
	a3.expect(typeLogin)

	// An expired token.
	a2.drop()
	start := time.Now()
	b.waitUsers("bob", "carol", "dave")
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("session ended %v after the drop, want the 300 ms grace", d)
	}
	x := e.dial(nil)
	x.send(map[string]any{"type": "resume", "session": m.Session})
	x.expectResumeFailed()
	x.send(`{"type":"login","name":"alice"}`) // the name is free again
	if m := x.expect(typeLogin); !*m.Success {
		t.Fatalf("login %+v", m)
	}
}

func TestGraceExpiryEndsCall(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ResumeGrace = 200 * time.Millisecond })
	a, b := e.login("alice"), e.login("bob")
	e.connect(a, b, "alice", "bob")
	start := time.Now()
	a.drop()
	b.expectCallstate("alice", callReconnecting)
	if m := b.expect(typeLeave); m.Reason != ReasonGone || m.Name != "alice" {
		t.Fatalf("leave %+v", m)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("call ended %v after the drop, want the 200 ms grace", d)
	}
	b.waitUsers("bob")
	waitFor(t, func() bool { return e.media.peer("alice").isClosed() && e.media.peer("bob").isClosed() })
	e.login("alice")
}

func TestQueueOverflowEndsDetachedSession(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.ResumeQueue = 3 })
	a, b := e.login("alice"), e.login("bob")
	e.connect(a, b, "alice", "bob")
	a.drop()
	b.expectCallstate("alice", callReconnecting)
	sig := e.media.peer("alice").sig
	for range 4 {
		sig.SendCandidate(webrtc.ICECandidateInit{Candidate: "candidate:x"})
	}
	if m := b.expect(typeLeave); m.Reason != ReasonGone {
		t.Fatalf("leave %+v", m)
	}
	e.resumeRefused(a.session)
}

func TestResumeReplacesOpenConnection(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	e.connect(a, b, "alice", "bob")
	a2, m := e.resume(a.session) // alice's old connection is still open
	if !*m.Success || m.Call != "bob" {
		t.Fatalf("resume %+v", m)
	}
	if err := <-a.closeErr; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
		t.Fatalf("old connection: %v, want a close frame", err)
	}
	// Its close did not end the session: the call goes on, alice is online.
	b.quiet(100 * time.Millisecond)
	e.login("carol")
	a2.waitUsers("alice", "bob", "carol")
	a2.send(`{"type":"leave"}`)
	if m := b.expect(typeLeave); m.Reason != ReasonHangup {
		t.Fatalf("leave %+v", m)
	}
}

func TestPingPong(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(nil)
	c.send(`{"type":"ping"}`)
	c.expect(typePong)
	c.send(`{"type":"login","name":"alice"}`)
	c.expect(typeLogin)
	c.send(`{"type":"ping"}`)
	c.expect(typePong)
}

func TestMediaInterruptionShowsCallstate(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	e.connect(a, b, "alice", "bob")
	sig := e.media.peer("alice").sig

	sig.Interrupted()
	b.expectCallstate("alice", callReconnecting)
	sig.Interrupted() // no news
	b.quiet(50 * time.Millisecond)
	sig.Restored()
	b.expectCallstate("alice", callConnected)
	a.quiet(50 * time.Millisecond) // alice is not told about herself

	// Media and WebSocket both lost: "connected" only once both are back.
	sig.Interrupted()
	b.expectCallstate("alice", callReconnecting)
	a.drop()
	e.waitDetached("alice")
	sig.Restored()
	b.quiet(100 * time.Millisecond)
	a2, m := e.resume(a.session)
	if !*m.Success {
		t.Fatalf("resume %+v", m)
	}
	b.expectCallstate("alice", callConnected)

	// ...and the other way round.
	a2.drop()
	b.expectCallstate("alice", callReconnecting)
	sig.Interrupted()
	if _, m = e.resume(m.Session); !*m.Success {
		t.Fatalf("resume %+v", m)
	}
	b.quiet(100 * time.Millisecond)
	sig.Restored()
	b.expectCallstate("alice", callConnected)
}

func TestCloseEndsDetachedSessions(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	e.login("carol").drop()
	e.connect(a, b, "alice", "bob")
	a.drop()
	b.expectCallstate("alice", callReconnecting)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := e.srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if m := b.expect(typeLeave); m.Reason != ReasonShutdown {
		t.Fatalf("leave %+v", m)
	}
	if on := e.online(); len(on) != 0 {
		t.Fatalf("sessions left after Close: %v", strings.Join(on, ","))
	}
	if !e.media.peer("alice").isClosed() {
		t.Fatal("media of a detached session left open")
	}
}
