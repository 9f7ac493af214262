package signaling

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// healthy is a pair of clients in a call that keep exchanging ping/pong
// while a fault is injected beside them: it records the slowest round trip
// and whether either connection was lost.
type healthy struct {
	stop, done chan struct{}
	mu         sync.Mutex
	maxRTT     time.Duration
	rounds     int
	err        error
}

func (e *env) startHealthy() *healthy {
	e.t.Helper()
	a, b := e.login("healthy-a"), e.login("healthy-b")
	e.connect(a, b, "healthy-a", "healthy-b")
	h := &healthy{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-h.stop:
				return
			case <-tick.C:
			}
			for _, c := range []*conn{a, b} {
				start := time.Now()
				if err := c.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)); err != nil {
					h.fail(err)
					return
				}
				if err := awaitPong(c); err != nil {
					h.fail(err)
					return
				}
				h.mu.Lock()
				h.maxRTT = max(h.maxRTT, time.Since(start))
				h.rounds++
				h.mu.Unlock()
			}
		}
	}()
	return h
}

func awaitPong(c *conn) error {
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-c.ch:
			if !ok {
				return errors.New("healthy connection closed")
			}
			if m.Type == typePong {
				return nil
			}
		case <-timeout:
			return errors.New("no pong within 10 s")
		}
	}
}

func (h *healthy) fail(err error) {
	h.mu.Lock()
	h.err = err
	h.mu.Unlock()
}

// check stops the pair and fails the test if it was interrupted.
func (h *healthy) check(t *testing.T) {
	t.Helper()
	// The pair must go on after the fault: a few more round trips.
	h.mu.Lock()
	from := h.rounds
	h.mu.Unlock()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		h.mu.Lock()
		n, err := h.rounds, h.err
		h.mu.Unlock()
		if n >= from+4 || err != nil {
			break
		}
	}
	close(h.stop)
	<-h.done
	h.mu.Lock()
	defer h.mu.Unlock()
	t.Logf("healthy pair: %d round trips, slowest %v", h.rounds, h.maxRTT)
	if h.err != nil {
		t.Fatalf("healthy pair interrupted: %v", h.err)
	}
	if h.rounds < from+4 || h.maxRTT > 3*time.Second {
		t.Fatalf("healthy pair: %d round trips, slowest %v", h.rounds, h.maxRTT)
	}
}

func (e *env) rawDial(header http.Header) (*websocket.Conn, error) {
	url := "ws" + strings.TrimPrefix(e.http.URL, "http") + "/ws"
	ws, resp, err := websocket.DefaultDialer.Dial(url, header)
	if err != nil {
		if resp != nil {
			return nil, &statusError{resp.StatusCode}
		}
		return nil, err
	}
	e.t.Cleanup(func() { _ = ws.Close() })
	return ws, nil
}

// closeCode reads until the connection ends and returns its close code
// (0 if it ended without a close frame).
func closeCode(ws *websocket.Conn, within time.Duration) (int, error) {
	_ = ws.SetReadDeadline(time.Now().Add(within))
	for {
		_, _, err := ws.ReadMessage()
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return ce.Code, nil
		}
		return 0, err
	}
}

func (e *env) clientCount() int {
	e.srv.mu.Lock()
	defer e.srv.mu.Unlock()
	return len(e.srv.clients)
}

func TestFaultClientStopsReading(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.WriteTimeout = time.Second
		c.MessageRate, c.MessageBurst = 1e6, 1e6 // this test is about the slow reader, not the flood
	})
	h := e.startHealthy()
	ws, err := e.rawDial(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.WriteJSON(map[string]string{"type": "login", "name": "stuck"}); err != nil {
		t.Fatal(err)
	}
	// Ask for big replies (each unknown type is echoed in an error) and
	// never read them: the socket buffers fill and the server's writer
	// times out.
	big := fmt.Sprintf(`{"type":%q}`, strings.Repeat("x", 200<<10))
	start := time.Now()
	for range 90 {
		if ws.WriteMessage(websocket.TextMessage, []byte(big)) != nil {
			break // the server has dropped us
		}
	}
	waitForWithin(t, 20*time.Second, func() bool { return e.clientCount() == 2 })
	t.Logf("non-reading client dropped after %v", time.Since(start))
	h.check(t)
}

func TestFaultNoLoginClosedAtDeadline(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.LoginTimeout = 500 * time.Millisecond })
	h := e.startHealthy()
	start := time.Now()
	idle, err := e.rawDial(nil)
	if err != nil {
		t.Fatal(err)
	}
	chatty, err := e.rawDial(nil) // talks, but never logs in
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range 20 {
			if chatty.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)) != nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	for _, ws := range []*websocket.Conn{idle, chatty} {
		code, err := closeCode(ws, 10*time.Second)
		if err != nil || code != websocket.ClosePolicyViolation {
			t.Fatalf("close code %d, %v; want 1008", code, err)
		}
	}
	if d := time.Since(start); d < 400*time.Millisecond {
		t.Fatalf("closed after %v, before the deadline", d)
	}
	// A logged-in client outlives the deadline.
	c := e.login("late")
	time.Sleep(800 * time.Millisecond)
	c.send(`{"type":"ping"}`)
	c.expect(typePong)
	h.check(t)
}

func TestFaultFloodClosedWith1008(t *testing.T) {
	e := newEnv(t, nil)
	h := e.startHealthy()
	ws, err := e.rawDial(nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range 2000 {
			if ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)) != nil {
				return
			}
		}
	}()
	code, err := closeCode(ws, 10*time.Second)
	if err != nil || code != websocket.ClosePolicyViolation {
		t.Fatalf("close code %d, %v; want 1008", code, err)
	}
	h.check(t)
}

func TestFaultThousandCandidatesCapped(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.MaxCandidates = 200
		c.MessageRate, c.MessageBurst = 1e6, 1e6 // this test is about the candidate cap
	})
	h := e.startHealthy()
	a, b := e.login("alice"), e.login("bob")
	e.connect(a, b, "alice", "bob")
	errs := 0
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 1000 {
			_ = a.ws.WriteJSON(map[string]any{"type": "candidate", "candidate": map[string]any{
				"candidate": fmt.Sprintf("candidate:%d 1 udp 1 10.0.0.1 %d typ host", i, 1000+i), "sdpMid": "0"}})
		}
	}()
	<-done
	a.send(`{"type":"ping"}`)
	for {
		m := a.next()
		if m.Type == typePong {
			break
		}
		if m.Type != typeError || !strings.Contains(m.Message, "too many ICE candidates") {
			t.Fatalf("unexpected %+v", m)
		}
		errs++
	}
	if got := len(e.media.peer("alice").gotCandidates()); got != 200 || errs != 1 {
		t.Fatalf("SFU got %d candidates, client %d errors; want 200 and 1", got, errs)
	}
	h.check(t)
}

func TestFaultConnectionCaps(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.MaxConns, c.MaxConnsPerIP = 6, 2
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	h := e.startHealthy() // 2 connections from 127.0.0.1
	from := func(ip string) http.Header { return http.Header{"X-Forwarded-For": {ip}} }
	var open []*websocket.Conn
	for _, ip := range []string{"1.1.1.1", "1.1.1.1", "2.2.2.2", "2.2.2.2"} {
		ws, err := e.rawDial(from(ip))
		if err != nil {
			t.Fatalf("%s: %v", ip, err)
		}
		open = append(open, ws)
	}
	if _, err := e.rawDial(from("3.3.3.3")); !isStatus(err, 503) {
		t.Fatalf("over the total cap: %v, want 503", err)
	}
	_ = open[0].Close()
	waitFor(t, func() bool { e.srv.mu.Lock(); defer e.srv.mu.Unlock(); return e.srv.nconns == 5 })
	if _, err := e.rawDial(from("1.1.1.1")); err != nil {
		t.Fatalf("after one closed: %v", err)
	}
	if _, err := e.rawDial(from("1.1.1.1")); !isStatus(err, 503) {
		t.Fatalf("over the per-address cap: %v, want 503", err)
	}
	h.check(t)
}

func isStatus(err error, code int) bool {
	var se *statusError
	return errors.As(err, &se) && se.code == code
}

func TestSDPLimits(t *testing.T) {
	e := newEnv(t, nil)
	a := e.login("alice")
	e.login("bob")
	a.send(offerMsg("bob", "v=0\r\n"+strings.Repeat("a=x\r\n", 14000)))
	a.expectError("bytes, more than the 65536")
	a.send(offerMsg("bob", "v=0\r\n"+strings.Repeat("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", 17)))
	a.expectError("17 media sections")
	a.send(answerMsg("bob", "v=0\r\n"+strings.Repeat("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", 17)))
	a.expectError("17 media sections")
	if len(e.media.calls) != 0 {
		t.Fatal("a refused offer reached the SFU")
	}
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestCallAttemptsLimitedAndDeclinedRingsShort(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e6, 0)}
	e := newEnv(t, func(c *Config) {
		c.now = clock.now
		c.CallAttempts, c.CallWindow = 5, 30*time.Second
		c.RingTimeout, c.DeclinedRingTimeout = 5*time.Second, 300*time.Millisecond
	})
	m, a, b := e.login("mallory"), e.login("alice"), e.login("bob")
	// The first call rings alice; she declines.
	m.send(offerMsg("alice", "v=0"))
	m.expectSkip(typeAnswer)
	a.expectSkip(typeOffer)
	a.send(`{"type":"leave","name":"mallory"}`)
	if l := m.expectSkip(typeLeave); l.Reason != ReasonDeclined {
		t.Fatalf("%+v", l)
	}
	// Mallory's next calls to alice ring only briefly: she is free for bob soon.
	for i := range 4 {
		start := time.Now()
		m.send(offerMsg("alice", "v=0"))
		m.expectSkip(typeAnswer)
		if l := m.expectSkip(typeLeave); l.Reason != ReasonNoAnswer {
			t.Fatalf("call %d: %+v", i, l)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("a declined caller's call rang %v", d)
		}
		a.expectSkip(typeOffer)
		if l := a.expectSkip(typeLeave); l.Reason != ReasonNoAnswer {
			t.Fatalf("callee: %+v", l)
		}
	}
	// Five attempts in the window: the sixth is refused with the wait.
	m.send(offerMsg("bob", "v=0"))
	if e := m.expectSkip(typeError); !strings.Contains(e.Message, "too many calls, wait 30 s") {
		t.Fatal(e.Message)
	}
	clock.add(10 * time.Second)
	m.send(offerMsg("bob", "v=0"))
	if e := m.expectSkip(typeError); !strings.Contains(e.Message, "too many calls, wait 20 s") {
		t.Fatal(e.Message)
	}
	// Bob, a friend, still reaches alice, with the full ring time.
	b.send(offerMsg("alice", "v=0"))
	b.expectSkip(typeAnswer)
	a.expectSkip(typeOffer)
	a.send(answerMsg("bob", "v=0"))
	b.expectSkip(typeAccepted)
	b.send(`{"type":"leave","name":"alice"}`)
	a.expectSkip(typeLeave)
	// The window slides.
	clock.add(21 * time.Second)
	m.send(offerMsg("bob", "v=0"))
	m.expectSkip(typeAnswer)
}

func TestPanicInHandlerIsRecovered(t *testing.T) {
	e := newEnv(t, nil)
	h := e.startHealthy()
	a := e.login("alice")
	e.login("bob")
	a.send(offerMsg("bob", "panic"))
	var err error
	select {
	case err = <-a.closeErr:
	case <-time.After(10 * time.Second):
		t.Fatal("connection not closed")
	}
	code := 0
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		code = ce.Code
	}
	if code != websocket.CloseInternalServerErr {
		t.Fatalf("close code %d (%v), want 1011", code, err)
	}
	waitFor(t, func() bool { return !strings.Contains(strings.Join(e.online(), ","), "alice") })
	c := e.login("carol") // the server still works
	c.send(offerMsg("bob", "v=0"))
	c.expect(typeAnswer)
	h.check(t)
}

func waitForWithin(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("condition not met within %v", d)
}

// expectSkip is expect, skipping candidates.
func (c *conn) expectSkip(typ string) Message {
	c.t.Helper()
	for {
		m := c.next()
		if m.Type == typeCandidate {
			continue
		}
		if m.Type != typ {
			c.t.Fatalf("got %+v, want type %q", m, typ)
		}
		return m
	}
}

// TestDeclinedCallerDoesNotKeepCalleeBusy: while alice's phone rings for a
// caller she declined a moment ago, she is not busy for anyone else: a
// friend's call ends that ring ("no answer" to both) and rings her instead.
// A second declined caller cannot do the same to the first.
func TestDeclinedCallerDoesNotKeepCalleeBusy(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		c.RingTimeout, c.DeclinedRingTimeout = 10*time.Second, 10*time.Second
	})
	loginFrom := func(name, ip string) *conn {
		c := e.dial(http.Header{"X-Forwarded-For": {ip}})
		c.send(map[string]any{"type": "login", "name": name})
		if m := c.expect(typeLogin); m.Success == nil || !*m.Success {
			t.Fatalf("login %s: %+v", name, m)
		}
		return c
	}
	m, a := loginFrom("mallory", "203.0.113.9"), loginFrom("alice", "198.51.100.1")
	m2, b := loginFrom("mallory2", "203.0.113.9"), loginFrom("bob", "198.51.100.2")
	m.send(offerMsg("alice", "v=0"))
	m.expectSkip(typeAnswer)
	a.expectSkip(typeOffer)
	a.send(`{"type":"leave","name":"mallory"}`)
	if l := m.expectSkip(typeLeave); l.Reason != ReasonDeclined {
		t.Fatalf("%+v", l)
	}
	// Mallory calls again: alice's phone rings.
	m.send(offerMsg("alice", "v=0"))
	m.expectSkip(typeAnswer)
	a.expectSkip(typeOffer)
	// Another name from mallory's address is declined too: alice is busy.
	m2.send(offerMsg("alice", "v=0"))
	m2.expectSkip(typeError) // "alice is in another call"
	if l := m2.expectSkip(typeLeave); l.Reason != ReasonBusy {
		t.Fatalf("mallory2: %+v, want busy", l)
	}
	// Bob, a friend, gets through: mallory's ring ends.
	b.send(offerMsg("alice", "v=0"))
	b.expectSkip(typeAnswer)
	if l := m.expectSkip(typeLeave); l.Reason != ReasonNoAnswer {
		t.Fatalf("mallory: %+v, want no answer", l)
	}
	if l := a.expectSkip(typeLeave); l.Name != "mallory" || l.Reason != ReasonNoAnswer {
		t.Fatalf("alice: %+v", l)
	}
	if o := a.expectSkip(typeOffer); o.Name != "bob" {
		t.Fatalf("alice: offer from %q", o.Name)
	}
	a.send(answerMsg("bob", "v=0"))
	b.expectSkip(typeAccepted)
	// Now alice is in a call: busy for mallory.
	m.send(offerMsg("alice", "v=0"))
	m.expectSkip(typeError)
	if l := m.expectSkip(typeLeave); l.Reason != ReasonBusy {
		t.Fatalf("mallory during the call: %+v, want busy", l)
	}
}
