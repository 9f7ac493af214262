package signaling

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// Seeds shared by the fuzz targets: frames of the tutorial protocol, good
// and bad. The committed corpora under testdata/fuzz hold more.
var fuzzFrames = []string{
	`{"type":"login","name":"alice"}`,
	`{"type":"login","name":"\u0430lice"}`,
	`{"type":"login","name":"al\u00adice"}`,
	`{"type":"login","name":"\u202eecila"}`,
	`{"type":"login","name":123}`,
	`{"type":"login"}`,
	`{"type":"offer","name":"bob","offer":{"type":"offer","sdp":"v=0"}}`,
	`{"type":"offer","name":"bob","offer":{"type":"answer","sdp":"v=0"}}`,
	`{"type":"offer","name":"bob","offer":null}`,
	`{"type":"answer","name":"alice","answer":{"type":"answer","sdp":"v=0"}}`,
	`{"type":"answer","answer":{"type":"answer","sdp":"bad"}}`,
	`{"type":"candidate","name":"bob","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}}`,
	`{"type":"candidate","candidate":null}`,
	`{"type":"candidate","candidate":{"candidate":"","sdpMLineIndex":65535}}`,
	`{"type":"leave","name":"bob"}`,
	`{"type":"leave"}`,
	`{"type":"resume","session":"x"}`,
	`{"type":"ping"}`,
	`{"type":["login"]}`,
	`{"type":"login","type":"offer"}`,
	`{"type":"\ud800"}`,
	`[]`, `null`, `"login"`, `{`, ``, "\xff\xfe",
}

// FuzzParseMessage: no input panics the decoder, and whatever it accepts
// has the fields its type needs.
func FuzzParseMessage(f *testing.F) {
	for _, s := range fuzzFrames {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseMessage(data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("error without a message")
			}
			return
		}
		switch m.Type {
		case typeLogin, typeCandidate, typeLeave:
		case typeOffer:
			if m.Name == "" || m.Offer == nil || strings.TrimSpace(m.Offer.SDP) == "" {
				t.Fatalf("accepted an incomplete offer: %+v", m)
			}
		case typeAnswer:
			if m.Answer == nil || strings.TrimSpace(m.Answer.SDP) == "" {
				t.Fatalf("accepted an incomplete answer: %+v", m)
			}
		default:
			if !knownType(m.Type) {
				t.Fatalf("accepted unknown type %q", m.Type)
			}
		}
		if name, err := cleanName(m.Name); err == nil {
			_ = nameKey(name)
		}
	})
}

// knownType admits message types added after this target was written
// (parseMessage grows with the protocol); they must at least be non-empty
// lower-case words.
func knownType(typ string) bool {
	if typ == "" {
		return false
	}
	for _, r := range typ {
		if r < 'a' || r > 'z' {
			return false
		}
	}
	return true
}

// FuzzHandle drives the whole server (WebSocket, handle, calls, the fake
// media) with frames from two logged-in connections. Input: frames, one
// per line; a line starting with "b" is sent by bob, any other by alice
// (the first byte is the sender, the rest the frame). No input may panic
// the server, stop it from answering, or keep Close from finishing.
func FuzzHandle(f *testing.F) {
	f.Add([]byte("a" + strings.Join(fuzzFrames, "\na")))
	f.Add([]byte(strings.Join([]string{
		`a{"type":"offer","name":"bob","offer":{"type":"offer","sdp":"v=0"}}`,
		`a{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMLineIndex":0}}`,
		`b{"type":"answer","name":"alice","answer":{"type":"answer","sdp":"v=0"}}`,
		`b{"type":"candidate","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMLineIndex":0}}`,
		`a{"type":"offer","name":"bob","offer":{"type":"offer","sdp":"v=0 restart"}}`,
		`b{"type":"leave","name":"alice"}`,
		`b{"type":"offer","name":"alice","offer":{"type":"offer","sdp":"v=0"}}`,
		`a{"type":"leave","name":"bob"}`,
	}, "\n")))
	f.Add([]byte("a{\"type\":\"offer\",\"name\":\"bob\",\"offer\":{\"type\":\"offer\",\"sdp\":\"bad\"}}\nb{\"type\":\"answer\",\"answer\":{\"type\":\"answer\",\"sdp\":\"bad\"}}"))
	f.Add([]byte("a{\"type\":\"offer\",\"name\":\"alice\",\"offer\":{\"type\":\"offer\",\"sdp\":\"v=0\"}}\na{\"type\":\"login\",\"name\":\"carol\"}\nb{\"type\":\"offer\",\"name\":\"nobody\",\"offer\":{\"type\":\"offer\",\"sdp\":\"v=0\"}}"))
	f.Fuzz(fuzzHandleOnce)
}

func fuzzHandleOnce(t *testing.T, data []byte) {
	media := &fakeMedia{}
	s, err := New(Config{Media: media, RingTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	h := httptest.NewServer(s)
	defer h.Close()
	alice := fuzzDial(t, h, "alice")
	defer alice.close()
	bob := fuzzDial(t, h, "bob")
	defer bob.close()

	lines := bytes.Split(data, []byte("\n"))
	if len(lines) > 32 {
		lines = lines[:32]
	}
	for _, line := range lines {
		fc := alice
		if len(line) > 0 {
			if line[0] == 'b' {
				fc = bob
			}
			line = line[1:]
		}
		_ = fc.ws.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if fc.ws.WriteMessage(websocket.TextMessage, line) != nil {
			break // the server closed this one (e.g. frame too large)
		}
	}
	// Both connections still get answers, unless the server closed them.
	alice.sync(t)
	bob.sync(t)

	// The clients' readers answer the server's close frames, so Close
	// does not wait for its writers' linger; 5 s is far above the few
	// milliseconds it takes.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	media.mu.Lock()
	defer media.mu.Unlock()
	for _, c := range media.calls {
		c.mu.Lock()
		closed := c.closed
		c.mu.Unlock()
		if !closed {
			t.Fatalf("call %s still open after Close", c.id)
		}
	}
}

// fuzzClient is one logged-in connection of FuzzHandle. Its reader
// goroutine reads every frame until the connection ends (answering the
// server's close frame, as a browser does) and reports the answer to the
// sync probe; close ends it and waits for it.
type fuzzClient struct {
	ws     *websocket.Conn
	probe  string        // the type of this client's sync probe: a nonce no input can guess
	synced chan struct{} // cap 1: the probe's answer arrived
	done   chan struct{} // closed when the reader has returned
}

// fuzzDial connects and logs in as name.
func fuzzDial(t *testing.T, h *httptest.Server, name string) *fuzzClient {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(h.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	fc := &fuzzClient{ws: ws, probe: "fuzzsync" + fuzzNonce(),
		synced: make(chan struct{}, 1), done: make(chan struct{})}
	go fc.read()
	_ = ws.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if err := ws.WriteJSON(map[string]string{"type": "login", "name": name}); err != nil {
		fc.close()
		t.Fatal(err)
	}
	return fc
}

func (fc *fuzzClient) read() {
	defer close(fc.done)
	probe := []byte(fc.probe)
	for {
		_, data, err := fc.ws.ReadMessage()
		if err != nil {
			return
		}
		if bytes.Contains(data, probe) {
			select {
			case fc.synced <- struct{}{}:
			default:
			}
		}
	}
}

// sync sends an unknown type and waits for its error to come back: the
// server has handled every earlier frame of the connection. A connection
// the server closed (too large a frame, a flood, a full queue) passes;
// one that stays open without answering fails.
func (fc *fuzzClient) sync(t *testing.T) {
	t.Helper()
	_ = fc.ws.SetWriteDeadline(time.Now().Add(2 * time.Second))
	if fc.ws.WriteMessage(websocket.TextMessage, []byte(`{"type":"`+fc.probe+`"}`)) != nil {
		return
	}
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case <-fc.synced:
	case <-fc.done:
	case <-timer.C:
		t.Fatal("server stopped answering within 5 s")
	}
}

// close ends the connection and its reader.
func (fc *fuzzClient) close() {
	_ = fc.ws.Close()
	<-fc.done
}

// fuzzNonce returns eight random lower-case letters.
func fuzzNonce() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = 'a' + b[i]%26
	}
	return string(b)
}
