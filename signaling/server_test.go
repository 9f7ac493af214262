package signaling

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"videochat/sfu"
)

func TestLoginRepliesWithICEServersAndUsers(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(nil)
	c.send(`{"type":"login","name":"  alice  "}`)
	m := c.nextAny()
	if m.Type != typeLogin || m.Success == nil || !*m.Success {
		t.Fatalf("login reply %+v", m)
	}
	if len(m.ICEServers) != 1 || m.ICEServers[0].Username != "u-alice" ||
		!strings.HasPrefix(m.ICEServers[0].URLs[0], "turn:127.0.0.1:") {
		t.Fatalf("iceServers %+v", m.ICEServers)
	}
	c.waitUsers("alice") // trimmed
	b := e.login("bob")
	b.waitUsers("alice", "bob")
	c.waitUsers("alice", "bob")
}

func TestMalformedRequestsGetErrors(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(nil)
	cases := []struct{ frame, want string }{
		{`not json`, "invalid JSON"},
		{`[1,2]`, "invalid JSON"},
		{`{"name":"x"}`, `"type"`},
		{`{"type":5}`, `"type"`},
		{`{"type":"dance"}`, "Command not found: dance"},
		{`{"type":"offer","name":"bob","offer":{"type":"offer","sdp":"x"}}`, "log in first"},
		{`{"type":"login","name":7}`, `"name"`},
	}
	for _, tc := range cases {
		c.send(tc.frame)
		c.expectError(tc.want)
	}
	if err := c.ws.WriteMessage(websocket.BinaryMessage, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	c.expectError("text frames")
	// The connection still works.
	c.send(`{"type":"login","name":"alice"}`)
	c.expect(typeLogin)

	for _, tc := range []struct{ frame, want string }{
		{`{"type":"offer","offer":{"type":"offer","sdp":"x"}}`, `missing field "name"`},
		{`{"type":"offer","name":"bob"}`, `missing field "offer"`},
		{`{"type":"offer","name":"bob","offer":"sdp"}`, `"offer"`},
		{`{"type":"offer","name":"bob","offer":{"type":"answer","sdp":"x"}}`, `must be "offer"`},
		{`{"type":"offer","name":"bob","offer":{"type":"offer","sdp":" "}}`, "empty"},
		{`{"type":"answer","answer":{"type":"answer"}}`, "empty"},
		{`{"type":"candidate","candidate":"a=candidate"}`, `"candidate"`},
		{`{"type":"candidate","candidate":{"candidate":5}}`, `candidate`},
		{`{"type":"answer","answer":{"type":"answer","sdp":"v=0"}}`, "no call to answer"},
		{`{"type":"login","name":"again"}`, "already logged in"},
	} {
		c.send(tc.frame)
		c.expectError(tc.want)
	}
}

func TestBadNamesAreRefused(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(nil)
	c.send(`{"type":"login"}`)
	if m := c.expect(typeLogin); *m.Success {
		t.Fatal("login without a name succeeded")
	}
	for _, name := range []string{"", "   ", strings.Repeat("x", 65), "a\x00b", "tab\there", "bell\u0007", "a\u0085b", "a\u200Fb\x7f"} {
		c.send(map[string]any{"type": "login", "name": name})
		m := c.expect(typeLogin)
		if m.Success == nil || *m.Success || m.Message == "" {
			t.Fatalf("name %q: %+v", name, m)
		}
	}
	c.send(map[string]any{"type": "login", "name": strings.Repeat("é", 64)})
	if m := c.expect(typeLogin); !*m.Success {
		t.Fatalf("64-character name refused: %+v", m)
	}
}

func TestDuplicateAndParallelLogins(t *testing.T) {
	e := newEnv(t, nil)
	e.login("alice")
	c := e.dial(nil)
	c.send(`{"type":"login","name":"alice"}`)
	if m := c.expect(typeLogin); *m.Success || !strings.Contains(m.Message, "taken") {
		t.Fatalf("duplicate login: %+v", m)
	}

	const n = 30
	var wins atomic.Int32
	var wg sync.WaitGroup
	conns := make([]*conn, n)
	for i := range conns {
		conns[i] = e.dial(nil)
	}
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.send(`{"type":"login","name":"zed"}`)
		}()
	}
	wg.Wait()
	for _, c := range conns {
		if m := c.expect(typeLogin); *m.Success {
			wins.Add(1)
		}
	}
	if wins.Load() != 1 {
		t.Fatalf("%d of %d parallel logins with one name succeeded, want 1", wins.Load(), n)
	}
}

func TestNameFreedOnDisconnect(t *testing.T) {
	e := newEnv(t, nil)
	a := e.login("alice")
	b := e.login("bob")
	b.waitUsers("alice", "bob")
	a.closeFrame()
	b.waitUsers("bob")
	e.login("alice")
}

func TestDeadClientIsDropped(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.PingInterval, c.PongTimeout = 50*time.Millisecond, 300*time.Millisecond
		c.ResumeGrace = 100 * time.Millisecond // a timeout detaches the session first
	})
	// A raw client that logs in and then never reads, so it never answers pings.
	url := "ws" + strings.TrimPrefix(e.http.URL, "http") + "/ws"
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteJSON(map[string]string{"type": "login", "name": "ghost"}); err != nil {
		t.Fatal(err)
	}
	b := e.login("bob")
	b.waitUsers("bob", "ghost")
	start := time.Now()
	b.waitUsers("bob")
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("dead client dropped after %v", d)
	}
}

func TestLeaveOutsideCallIsHarmless(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("alice")
	c.send(`{"type":"leave","name":"bob"}`)
	c.send(`{"type":"leave"}`)
	c.quiet(200 * time.Millisecond)
	e.login("bob")
	c.waitUsers("alice", "bob")
}

func TestOfferToUnknownSelfAndBusyUsers(t *testing.T) {
	e := newEnv(t, nil)
	a, b, c := e.login("alice"), e.login("bob"), e.login("carol")
	a.send(offerMsg("nobody", "v=0"))
	a.expectError("not online")
	a.send(offerMsg("alice", "v=0"))
	a.expectError("yourself")
	e.connect(a, b, "alice", "bob")
	c.send(offerMsg("bob", "v=0"))
	c.expectError("another call")
	if m := c.expect(typeLeave); m.Reason != ReasonBusy || m.Name != "bob" {
		t.Fatalf("busy leave: %+v", m)
	}
	// A call with someone else while in a call is refused.
	a.send(offerMsg("carol", "v=0"))
	a.expectError("already in a call")
	// Nothing reached bob.
	b.quiet(100 * time.Millisecond)
}

func TestCallLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	a.send(map[string]any{"type": "candidate", "name": "bob", "candidate": map[string]any{"candidate": "candidate:early", "sdpMid": "0"}})
	e.connect(a, b, "alice", "bob")
	if got := e.media.peer("alice").gotCandidates(); len(got) != 1 || got[0].Candidate != "candidate:early" {
		t.Fatalf("early candidate not delivered after the offer: %+v", got)
	}
	b.send(map[string]any{"type": "candidate", "name": "alice", "candidate": map[string]any{"candidate": "candidate:b", "sdpMid": "0"}})
	b.send(map[string]any{"type": "candidate", "name": "alice", "candidate": nil})
	waitFor(t, func() bool { return len(e.media.peer("bob").gotCandidates()) == 2 })

	// Renegotiation: an offer to the current peer is answered.
	b.send(offerMsg("alice", "v=0 renegotiate"))
	if m := b.expect(typeAnswer); m.Name != "alice" {
		t.Fatalf("renegotiation answer %+v", m)
	}
	b.expect(typeCandidate)
	b.send(offerMsg("alice", "bad"))
	b.expectError("could not apply your offer")

	b.send(`{"type":"leave","name":"alice"}`)
	if m := a.expect(typeLeave); m.Reason != ReasonHangup || m.Name != "bob" {
		t.Fatalf("hangup leave: %+v", m)
	}
	waitFor(t, func() bool { return e.media.peer("alice").isClosed() && e.media.peer("bob").isClosed() })
	b.quiet(100 * time.Millisecond)
	// Both are free again.
	e.connect(b, a, "bob", "alice")
}

func TestDeclineAndNoAnswer(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RingTimeout = 300 * time.Millisecond })
	a, b := e.login("alice"), e.login("bob")
	a.send(offerMsg("bob", "v=0"))
	a.expect(typeAnswer)
	a.expect(typeCandidate)
	b.expect(typeOffer)
	b.expect(typeCandidate)
	b.send(`{"type":"leave","name":"alice"}`)
	if m := a.expect(typeLeave); m.Reason != ReasonDeclined {
		t.Fatalf("decline: %+v", m)
	}

	a.send(offerMsg("bob", "v=0"))
	a.expect(typeAnswer)
	a.expect(typeCandidate)
	b.expect(typeOffer)
	b.expect(typeCandidate)
	start := time.Now()
	for _, c := range []*conn{a, b} {
		if m := c.expect(typeLeave); m.Reason != ReasonNoAnswer {
			t.Fatalf("no answer: %+v", m)
		}
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("no-answer after %v, want about 300 ms", d)
	}
	// An answer after the timeout finds no call.
	b.send(answerMsg("alice", "v=0"))
	b.expectError("no call")
}

func TestDisconnectAndFailureEndTheCall(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	e.connect(a, b, "alice", "bob")
	b.closeFrame()
	if m := a.expect(typeLeave); m.Reason != ReasonGone || m.Name != "bob" {
		t.Fatalf("disconnect leave: %+v", m)
	}

	c := e.login("carol")
	e.connect(a, c, "alice", "carol")
	e.media.peer("carol").sig.Failed(errors.New("ice failed"))
	for _, x := range []*conn{a, c} {
		if m := x.expect(typeLeave); m.Reason != ReasonFailed {
			t.Fatalf("failure leave: %+v", m)
		}
	}
}

func TestBadOfferAbortsCallQuietly(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	a.send(offerMsg("bob", "bad"))
	a.expectError("could not apply your offer")
	// alice and bob are both free again.
	e.connect(a, b, "alice", "bob")
}

func TestOriginCheck(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.AllowedOrigins = []string{"https://friend.example"} })
	host := strings.TrimPrefix(e.http.URL, "http://")
	for _, tc := range []struct {
		origin string
		ok     bool
	}{
		{"http://" + host, true},
		{"https://friend.example", true},
		{"https://evil.example", false},
		{"http://" + host + ".evil.example", false},
	} {
		_, err := e.tryDial(http.Header{"Origin": {tc.origin}})
		var se *statusError
		switch {
		case tc.ok && err != nil:
			t.Errorf("origin %s refused: %v", tc.origin, err)
		case !tc.ok && (!errors.As(err, &se) || se.code != http.StatusForbidden):
			t.Errorf("origin %s: %v, want 403", tc.origin, err)
		}
	}
}

func TestOversizedFrameClosesOnlyThatConnection(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxMessageSize = 64 << 10 })
	a, b := e.login("alice"), e.login("bob")
	// The server may close while this is still being written.
	_ = a.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"login","name":"`+strings.Repeat("x", 70<<10)+`"}`))
	err := <-a.closeErr
	if !websocket.IsCloseError(err, websocket.CloseMessageTooBig) {
		t.Fatalf("got %v, want close 1009", err)
	}
	b.waitUsers("bob")
	// A 60 KiB offer (many candidates) still fits.
	c := e.login("carol")
	b.send(offerMsg("carol", "v=0\r\n"+strings.Repeat("a=candidate:x\r\n", 3500)))
	b.expect(typeAnswer)
	c.expect(typeOffer)
}

func TestShutdownTellsClients(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	idle := e.login("carol")
	e.connect(a, b, "alice", "bob")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := e.srv.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*conn{a, b} {
		if m := c.expect(typeLeave); m.Reason != ReasonShutdown {
			t.Fatalf("shutdown leave: %+v", m)
		}
	}
	for _, c := range []*conn{a, b, idle} {
		if err := <-c.closeErr; !websocket.IsCloseError(err, websocket.CloseGoingAway) {
			t.Fatalf("close: %v", err)
		}
	}
	if _, err := e.tryDial(nil); err == nil {
		t.Fatal("new connection accepted after shutdown")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal("condition not met within 5 s")
}

// recordingStarted reports whether the fake media of the latest call was
// told to record.
func (m *fakeMedia) recordingStarted() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.calls) == 0 {
		return false
	}
	c := m.calls[len(m.calls)-1]
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recording
}

// TestRecordingStartsOnlyWhenAccepted: nothing is recorded while the phone
// rings; once the callee answers, recording starts and both are told.
func TestRecordingStartsOnlyWhenAccepted(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Recording = true })
	a, b := e.login("alice"), e.login("bob")
	a.send(offerMsg("bob", "v=0"))
	if m := a.expect(typeAnswer); m.Recording {
		t.Fatalf("the caller is told of recording while the phone rings: %+v", m)
	}
	a.expect(typeCandidate)
	if m := b.expect(typeOffer); m.Recording {
		t.Fatalf("the callee is told of recording before accepting: %+v", m)
	}
	b.expect(typeCandidate)
	if e.media.recordingStarted() {
		t.Fatal("recording started while ringing")
	}
	b.send(answerMsg("alice", "v=0"))
	if m := a.expect(typeAccepted); !m.Recording {
		t.Fatalf("accepted does not say recording: %+v", m)
	}
	a.expect(typeRecording)
	b.expect(typeRecording)
	if !e.media.recordingStarted() {
		t.Fatal("recording not started after the callee accepted")
	}
}

// TestDeclinedCallIsNeverRecorded: a declined call never starts recording.
func TestDeclinedCallIsNeverRecorded(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.Recording = true })
	a, b := e.login("alice"), e.login("bob")
	a.send(offerMsg("bob", "v=0"))
	a.expect(typeAnswer)
	a.expect(typeCandidate)
	b.expect(typeOffer)
	b.send(`{"type":"leave","name":"alice"}`)
	if m := a.expect(typeLeave); m.Reason != ReasonDeclined {
		t.Fatalf("leave %+v, want declined", m)
	}
	if e.media.recordingStarted() {
		t.Fatal("a declined call was recorded")
	}
}

// TestClosedPeerConnectionWaitsForLeave: a client that hangs up closes its
// PeerConnection right after sending leave, and the close can reach the
// SFU first (always possible across nodes). The other side must hear
// "hangup", not "connection failed".
func TestClosedPeerConnectionWaitsForLeave(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	e.connect(a, b, "alice", "bob")
	e.media.peer("bob").sig.Failed(fmt.Errorf("%w: DTLS close_notify", sfu.ErrPCClosed))
	b.send(`{"type":"leave","name":"alice"}`)
	if m := a.expect(typeLeave); m.Reason != ReasonHangup || m.Name != "bob" {
		t.Fatalf("alice heard %+v, want bob's hangup", m)
	}
	// Without a leave, the closed PeerConnection still ends the call.
	c := e.login("carol")
	e.connect(a, c, "alice", "carol")
	e.media.peer("carol").sig.Failed(fmt.Errorf("%w: DTLS close_notify", sfu.ErrPCClosed))
	if m := a.expect(typeLeave); m.Reason != ReasonFailed || m.Name != "carol" {
		t.Fatalf("alice heard %+v, want carol's connection failed", m)
	}
}
