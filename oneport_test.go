package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/stun/v3"
	"github.com/pion/webrtc/v4"

	"videochat/signaling"
)

// TestOnePortServesEverything: with a certificate, the -addr port answers
// HTTPS, redirects plain HTTP to https, answers TURN over TCP and over TLS
// (a STUN Allocate gets a 401 challenge), and the login reply names
// turns: on that port.
func TestOnePortServesEverything(t *testing.T) {
	cert, key := writeSelfSigned(t)
	app := startApp(t, func(c *Config) {
		c.TLSCert, c.TLSKey = cert, key
		c.TURNAddr, c.TURNSecret, c.ICETCP = "127.0.0.1:0", "s3cret", true
	})
	addr := app.ln.Addr().String()
	port := strconv.Itoa(app.ln.Addr().(*net.TCPAddr).Port)
	insecure := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // self-signed test certificate

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: insecure},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get("https://" + addr + "/diag")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /diag over https: %s", resp.Status)
	}
	resp, err = client.Get("http://" + addr + "/x?y=1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusMovedPermanently || loc != "https://"+addr+"/x?y=1" {
		t.Fatalf("plain HTTP: %s Location %q, want a redirect to https", resp.Status, loc)
	}

	allocate := func(c net.Conn) {
		t.Helper()
		m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
			stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}, stun.Fingerprint)
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(m.Raw); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		reply := &stun.Message{Raw: buf[:n]}
		if err := reply.Decode(); err != nil {
			t.Fatal(err)
		}
		var code stun.ErrorCodeAttribute
		if err := code.GetFrom(reply); err != nil || code.Code != stun.CodeUnauthorized {
			t.Fatalf("Allocate reply %v (%v), want a 401 challenge", reply, err)
		}
	}
	plain, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	allocate(plain)
	for _, alpn := range [][]string{{"stun.turn"}, nil} {
		tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, NextProtos: alpn}) //nolint:gosec // test certificate
		if err != nil {
			t.Fatal(err)
		}
		allocate(tc)
		tc.Close()
	}

	ws := dialWS(t, app, insecure)
	defer ws.Close()
	if err := ws.WriteJSON(signaling.Message{Type: "login", Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	var reply signaling.Message
	if err := ws.ReadJSON(&reply); err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, s := range reply.ICEServers {
		urls = append(urls, s.URLs...)
	}
	if want := "turns:localhost:" + port + "?transport=tcp"; !strings.Contains(strings.Join(urls, " "), want) {
		t.Fatalf("iceServers %v lack %s", urls, want)
	}
}

// TestEchoOverICETCP: a pion client that may only use TCP reaches the
// SFU's echo peer over ICE-TCP on the -addr port; with -ice-tcp off the
// answer has no TCP candidate.
func TestEchoOverICETCP(t *testing.T) {
	app := startApp(t, func(c *Config) { c.ICETCP = true })
	dc, closeFn := echoClient(t, app, "ice-tcp")
	defer closeFn()
	got := make(chan string, 1)
	dc.OnMessage(func(m webrtc.DataChannelMessage) { got <- string(m.Data) })
	if err := dc.SendText("hello"); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "hello" {
			t.Fatalf("echo %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no echo")
	}

	off := startApp(t, nil)
	if sdp := echoAnswer(t, off); strings.Contains(sdp, " tcp ") || strings.Contains(sdp, " TCP ") {
		t.Fatalf("ICE-TCP off, but the answer has a TCP candidate:\n%s", sdp)
	}
}

func dialWS(t *testing.T, app *App, tlsCfg *tls.Config) *websocket.Conn {
	t.Helper()
	d := websocket.Dialer{TLSClientConfig: tlsCfg, HandshakeTimeout: 5 * time.Second}
	ws, _, err := d.Dial(wsURLOf(app.URL(), "/ws"), nil)
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

// echoAnswer posts a data-channel offer to /diag/echo and returns the answer.
func echoAnswer(t *testing.T, app *App) string {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.CreateDataChannel("x", nil); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(offer)
	resp, err := http.Post(app.URL()+"diag/echo", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer webrtc.SessionDescription
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("echo: %s %v", resp.Status, err)
	}
	return answer.SDP
}

// TestDiagICEServers: /diag/ice hands out TURN servers for a throwaway name;
// with access control on, only for a valid sign-in token.
func TestDiagICEServers(t *testing.T) {
	get := func(app *App, query string) (servers []signaling.ICEServer, message string) {
		t.Helper()
		resp, err := http.Get(app.URL() + "diag/ice" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			ICEServers []signaling.ICEServer `json:"iceServers"`
			Message    string                `json:"message"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("diag/ice: %s %v", resp.Status, err)
		}
		return body.ICEServers, body.Message
	}
	open := startApp(t, func(c *Config) { c.TURNAddr, c.TURNSecret = "127.0.0.1:0", "s3cret" })
	if s, _ := get(open, ""); len(s) == 0 || !strings.Contains(s[len(s)-1].Username, ":diag-") || s[len(s)-1].Credential == "" {
		t.Fatalf("open server: iceServers %+v", s)
	}

	const secret = "0123456789abcdef0123456789abcdef"
	closed := startApp(t, func(c *Config) { c.TURNAddr, c.TURNSecret, c.AuthSecret = "127.0.0.1:0", "s3cret", secret })
	if s, msg := get(closed, ""); len(s) != 0 || msg == "" {
		t.Fatalf("no token: iceServers %+v, message %q", s, msg)
	}
	if s, msg := get(closed, "?token=garbage"); len(s) != 0 || !strings.Contains(msg, "malformed") {
		t.Fatalf("bad token: iceServers %+v, message %q", s, msg)
	}
	token := appToken(t, secret, "alice", time.Now().Add(time.Hour))
	s, _ := get(closed, "?token="+token)
	if len(s) == 0 || !strings.HasSuffix(s[len(s)-1].Username, ":alice") {
		t.Fatalf("valid token: iceServers %+v", s)
	}
}
