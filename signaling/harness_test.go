package signaling

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// verifyNoLeaks checks, when the test ends, that it left no goroutine of
// its own running (TestMain catches leaks only at the end of the package).
// Call it before anything else registers a cleanup: cleanups run last in,
// first out, so this one runs after the test's servers and clients closed.
func verifyNoLeaks(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

type env struct {
	t     *testing.T
	srv   *Server
	http  *httptest.Server
	media *fakeMedia
}

func newEnv(t *testing.T, mod func(*Config)) *env {
	t.Helper()
	verifyNoLeaks(t)
	media := &fakeMedia{}
	cfg := Config{Media: media, RingTimeout: 5 * time.Second,
		ICEServers: func(user, host string) []ICEServer {
			return []ICEServer{{URLs: []string{"turn:" + host}, Username: "u-" + user, Credential: "c"}}
		}}
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(s)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Close(ctx)
		h.Close()
	})
	return &env{t: t, srv: s, http: h, media: media}
}

type conn struct {
	t  *testing.T
	ws *websocket.Conn
	ch chan Message
	// closeErr receives the read error that ended the connection.
	closeErr chan error
	session  string // the token from the login reply
}

func (e *env) dial(header http.Header) *conn {
	e.t.Helper()
	c, err := e.tryDial(header)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func (e *env) tryDial(header http.Header) (*conn, error) {
	url := "ws" + strings.TrimPrefix(e.http.URL, "http") + "/ws"
	ws, resp, err := websocket.DefaultDialer.Dial(url, header)
	if err != nil {
		if resp != nil {
			return nil, &statusError{resp.StatusCode}
		}
		return nil, err
	}
	c := &conn{t: e.t, ws: ws, ch: make(chan Message, 100), closeErr: make(chan error, 1)}
	go func() {
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				c.closeErr <- err
				close(c.ch)
				return
			}
			var m Message
			if err := json.Unmarshal(data, &m); err != nil {
				c.closeErr <- err
				close(c.ch)
				return
			}
			c.ch <- m
		}
	}()
	e.t.Cleanup(func() { _ = ws.Close() })
	return c, nil
}

type statusError struct{ code int }

func (s *statusError) Error() string { return http.StatusText(s.code) }

func (c *conn) send(v any) {
	c.t.Helper()
	var err error
	if s, ok := v.(string); ok {
		err = c.ws.WriteMessage(websocket.TextMessage, []byte(s))
	} else {
		err = c.ws.WriteJSON(v)
	}
	if err != nil {
		c.t.Fatal(err)
	}
}

// next returns the next message that is not a users list.
func (c *conn) next() Message {
	c.t.Helper()
	for {
		m := c.nextAny()
		if m.Type != typeUsers {
			return m
		}
	}
}

func (c *conn) nextAny() Message {
	c.t.Helper()
	select {
	case m, ok := <-c.ch:
		if !ok {
			c.t.Fatal("connection closed while waiting for a message")
		}
		return m
	case <-time.After(5 * time.Second):
		c.t.Fatal("no message within 5 s")
	}
	return Message{}
}

func (c *conn) expect(typ string) Message {
	c.t.Helper()
	m := c.next()
	if m.Type != typ {
		c.t.Fatalf("got %+v, want type %q", m, typ)
	}
	return m
}

func (c *conn) expectError(contains string) {
	c.t.Helper()
	m := c.expect(typeError)
	if !strings.Contains(m.Message, contains) {
		c.t.Fatalf("error %q does not mention %q", m.Message, contains)
	}
}

// quiet asserts that nothing but users lists arrives for d.
func (c *conn) quiet(d time.Duration) {
	c.t.Helper()
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-c.ch:
			if !ok {
				c.t.Fatal("connection closed")
			}
			if m.Type != typeUsers {
				c.t.Fatalf("unexpected message %+v", m)
			}
		case <-deadline:
			return
		}
	}
}

// waitUsers waits for a users list equal to want.
func (c *conn) waitUsers(want ...string) {
	c.t.Helper()
	for {
		m := c.nextAny()
		if m.Type == typeUsers && strings.Join(m.Users, ",") == strings.Join(want, ",") {
			return
		}
	}
}

func (e *env) login(name string) *conn {
	e.t.Helper()
	c := e.dial(nil)
	c.send(map[string]any{"type": "login", "name": name})
	m := c.expect(typeLogin)
	if m.Success == nil || !*m.Success {
		e.t.Fatalf("login %q failed: %+v", name, m)
	}
	c.session = m.Session
	return c
}

// closeFrame closes the connection as a browser does when its tab closes:
// with a close frame.
func (c *conn) closeFrame() {
	c.t.Helper()
	msg := websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye")
	if err := c.ws.WriteControl(websocket.CloseMessage, msg, time.Now().Add(time.Second)); err != nil {
		c.t.Fatal(err)
	}
	<-c.closeErr // the server's close frame, or the end of the connection
	_ = c.ws.Close()
}

// drop cuts the TCP connection without a close frame (network lost).
func (c *conn) drop() {
	_ = c.ws.UnderlyingConn().Close()
	<-c.closeErr
}

func offerMsg(to, sdp string) map[string]any {
	return map[string]any{"type": "offer", "name": to, "offer": map[string]any{"type": "offer", "sdp": sdp}}
}

func answerMsg(to, sdp string) map[string]any {
	return map[string]any{"type": "answer", "name": to, "answer": map[string]any{"type": "answer", "sdp": sdp}}
}

// connect makes a call from a to b and accepts it.
func (e *env) connect(a, b *conn, aName, bName string) {
	e.t.Helper()
	a.send(offerMsg(bName, "v=0 caller"))
	if m := a.expect(typeAnswer); m.Name != bName || m.Answer == nil || m.Answer.SDP != "answer:"+aName {
		e.t.Fatalf("caller got %+v", m)
	}
	a.expect(typeCandidate)
	if m := b.expect(typeOffer); m.Name != aName || m.Offer == nil || m.Offer.SDP != "offer:"+bName {
		e.t.Fatalf("callee got %+v", m)
	}
	b.expect(typeCandidate)
	b.send(answerMsg(aName, "v=0 callee"))
	if m := a.expect(typeAccepted); m.Name != bName {
		e.t.Fatalf("accepted: %+v", m)
	}
}
