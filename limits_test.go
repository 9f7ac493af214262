package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
	"videochat/signaling"
)

// startAppTweaked is startApp with a change to the App before it serves
// (shorter HTTP timeouts, so that the tests need not wait 10 s).
func startAppTweaked(t *testing.T, tweak func(*App)) *App {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	app, err := NewApp(Config{Addr: "127.0.0.1:0", UDPPort: 0, IncludeLoopback: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	tweak(app)
	served := make(chan error, 1)
	go func() { served <- app.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := app.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return app
}

// mediaWatch samples the video packets a peer receives and reports the
// slowest one-second window.
type mediaWatch struct {
	stop, done chan struct{}
	minPPS     int   // the slowest second of video received
	maxStuck   int64 // the most packets sent over a second ago and not yet received
}

// watchMedia samples, every second, the video p receives from its partner
// from. A sender starved of CPU (it runs in this test process) sends less,
// which is not the server's doing; what the server must not do is hold
// packets back or drop them, so the watch also tracks how many packets
// sent more than a second ago have not arrived yet.
func watchMedia(p, from *wsPeer) *mediaWatch {
	w := &mediaWatch{stop: make(chan struct{}), done: make(chan struct{}), minPPS: 1 << 30}
	go func() {
		defer close(w.done)
		r0, s0 := p.Received(webrtc.RTPCodecTypeVideo).Packets, from.SentVideo()
		last, prevSent := r0, s0
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			n := p.Received(webrtc.RTPCodecTypeVideo).Packets
			w.minPPS = min(w.minPPS, n-last)
			w.maxStuck = max(w.maxStuck, (prevSent-s0)-int64(n-r0))
			last, prevSent = n, from.SentVideo()
		}
	}()
	return w
}

func (w *mediaWatch) finish() (minPPS int, maxStuck int64) {
	close(w.stop)
	<-w.done
	return w.minPPS, w.maxStuck
}

// assertNotHeld fails the test if the server held a healthy call's video
// back: 25 packets is half a second of it (unloaded: 0-1).
func assertNotHeld(t *testing.T, stuck int64) {
	t.Helper()
	if stuck > 25 {
		t.Fatalf("the call's media was held back: %d packets sent over 1 s earlier had not arrived", stuck)
	}
}

// healthyCall: two pion clients in a call with media flowing.
func healthyCall(t *testing.T, app *App) (alice, bob *wsPeer, stop func()) {
	t.Helper()
	alice, bob = establish(t, app, rtctest.Options{})
	stopA, stopB := alice.StartSending(), bob.StartSending()
	for _, p := range []*wsPeer{alice, bob} {
		if err := p.WaitPackets(webrtc.RTPCodecTypeVideo, 20, 20*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return alice, bob, func() { stopA(); stopB() }
}

// stillSignals asserts that p's WebSocket is open and answered.
func stillSignals(t *testing.T, p *wsPeer) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("%s was dropped", p.name)
	default:
	}
	p.send(signaling.Message{Type: "ping"})
	p.expect("pong")
}

// TestStormPionCall: beside a call whose media keeps flowing, 1,000
// WebSocket clients (from 25 loopback addresses, under the per-address
// cap) log in and then all vanish at once.
func TestStormPionCall(t *testing.T) {
	const n, addrs = 1000, 25
	app := startApp(t, nil)
	alice, bob, stop := healthyCall(t, app)
	defer stop()
	watchA, watchB := watchMedia(alice, bob), watchMedia(bob, alice)
	videoOf := func() (lost, late, pkts int) {
		for _, p := range []*wsPeer{alice, bob} {
			r := p.Received(webrtc.RTPCodecTypeVideo)
			lost, late, pkts = lost+r.Lost(), late+r.Late, pkts+r.Packets
		}
		return lost, late, pkts
	}
	lost0, late0, pkts0 := videoOf()
	url := wsURLOf(app.URL(), "/ws")
	conns := make([]*websocket.Conn, n)
	usersBytes := make([]atomic.Int64, n)
	var readers sync.WaitGroup
	next, failed := atomic.Int64{}, atomic.Int64{}
	start := time.Now()
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				ws, err := stormLogin(url, fmt.Sprintf("127.0.0.%d", 2+i%addrs), fmt.Sprintf("storm-%04d", i))
				if err != nil {
					failed.Add(1)
					t.Error(err)
					continue
				}
				conns[i] = ws
				readers.Add(1)
				go func() {
					defer readers.Done()
					for {
						_, data, err := ws.ReadMessage()
						if err != nil {
							return
						}
						if bytes.HasPrefix(data, []byte(`{"type":"users"`)) {
							usersBytes[i].Add(int64(len(data)))
						}
					}
				}()
			}
		}()
	}
	wg.Wait()
	loginTime := time.Since(start)
	if failed.Load() > 0 {
		t.Fatalf("%d of %d logins failed", failed.Load(), n)
	}
	// All vanish at once: half with a close frame (logged out at once),
	// half with a reset (held for a resume, then logged out at shutdown).
	bye := websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye")
	for i, ws := range conns {
		if i%2 == 0 {
			_ = ws.WriteControl(websocket.CloseMessage, bye, time.Now().Add(time.Second))
		} else if tc, ok := ws.UnderlyingConn().(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		_ = ws.Close()
	}
	readers.Wait()
	time.Sleep(2 * time.Second) // the logouts go on beside the call
	minA, stuckA := watchA.finish()
	minB, stuckB := watchB.finish()
	lost, late, pkts := videoOf()
	lost, late, pkts = lost-lost0, late-late0, pkts-pkts0
	var maxBytes int64
	for i := range usersBytes {
		maxBytes = max(maxBytes, usersBytes[i].Load())
	}
	t.Logf("%d logins in %v; users traffic at most %d B per storm client; slowest second of video: alice %d, bob %d packets (50/s sent); at most %d / %d packets held over 1 s; %d lost and %d late of %d packets",
		n, loginTime.Round(time.Millisecond), maxBytes, minA, minB, stuckA, stuckB, lost, late, pkts)
	stillSignals(t, alice)
	stillSignals(t, bob)
	if maxBytes > 100<<10 {
		t.Fatalf("users traffic %d B per client", maxBytes)
	}
	// The senders run in this process too: on a loaded machine they send
	// less (at load average 19, a whole second without a packet was seen),
	// which is not the server's doing. What the server must not do is stall
	// or drop the call's packets: none may be held back for over a second
	// (unloaded: 0-1; 25 is half a second of video), and (almost) nothing
	// is lost on the way: under 2 % (a starved in-process receiver can
	// miss a few). Late packets are not lost: the prober's padding burst
	// and the next frame are numbered in order but written by two
	// goroutines, so on a starved machine a frame may overtake the end of
	// a burst (CI saw 4 such swaps in 274 packets); a receiver's jitter
	// buffer takes them in any order.
	assertNotHeld(t, stuckA)
	assertNotHeld(t, stuckB)
	if lost*50 > pkts {
		t.Fatalf("media lost during the storm: %d of %d packets", lost, pkts)
	}
}

func stormLogin(url, from, name string) (*websocket.Conn, error) {
	d := &websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
		return nd.DialContext(ctx, network, addr)
	}, HandshakeTimeout: 30 * time.Second}
	ws, _, err := d.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	if err := ws.WriteJSON(signaling.Message{Type: "login", Name: name}); err != nil {
		_ = ws.Close()
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		var m signaling.Message
		if err := ws.ReadJSON(&m); err != nil {
			_ = ws.Close()
			return nil, fmt.Errorf("login %s: %w", name, err)
		}
		if m.Type == "login" {
			if m.Success == nil || !*m.Success {
				_ = ws.Close()
				return nil, fmt.Errorf("login %s refused: %s", name, m.Message)
			}
			_ = ws.SetReadDeadline(time.Time{})
			return ws, nil
		}
	}
}

// TestFaultSlowHTTPClients: slowloris headers and a slow body are cut off
// at the HTTP server's timeouts while a call goes on, and a WebSocket
// outlives the request read timeout.
func TestFaultSlowHTTPClients(t *testing.T) {
	app := startAppTweaked(t, func(a *App) {
		a.http.ReadHeaderTimeout, a.http.ReadTimeout = time.Second, 2*time.Second
	})
	alice, bob, stop := healthyCall(t, app)
	defer stop()
	watch := watchMedia(bob, alice)
	addr := app.ln.Addr().String()
	start := time.Now()
	var wg sync.WaitGroup
	cut := make([]time.Duration, 201) // a slow body and 200 slowloris clients
	for i := range cut {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if i == 0 { // a slow body: complete headers, then a byte a second
				fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
			} else {
				fmt.Fprintf(c, "GET / HTTP/1.1\r\n")
			}
			buf := make([]byte, 512)
			for range 15 {
				if i == 0 {
					_, err = c.Write([]byte("x"))
				} else {
					_, err = fmt.Fprintf(c, "X-Slow-%d: y\r\n", i)
				}
				if err != nil {
					break
				}
				_ = c.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := c.Read(buf); err != nil && !isTimeout(err) {
					break // closed by the server
				}
			}
			cut[i] = time.Since(start)
		}()
	}
	// Meanwhile a WebSocket stays open past ReadTimeout, and the page loads.
	ws := dialPeer(t, wsURLOf(app.URL(), "/ws"), "carol", rtctest.Options{})
	time.Sleep(2500 * time.Millisecond)
	stillSignals(t, ws)
	resp, err := http.Get(app.URL() + "healthz")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	wg.Wait()
	minPPS, stuck := watch.finish()
	t.Logf("slow body cut after %v; slow headers cut after %v..%v; slowest second of video %d packets, at most %d held over 1 s",
		cut[0].Round(10*time.Millisecond), slicesMin(cut[1:]).Round(10*time.Millisecond), slicesMax(cut[1:]).Round(10*time.Millisecond), minPPS, stuck)
	assertNotHeld(t, stuck)
	for i, d := range cut {
		if d > 6*time.Second {
			t.Fatalf("slow client %d held its connection %v", i, d)
		}
	}
	stillSignals(t, alice)
	stillSignals(t, bob)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func slicesMin(d []time.Duration) time.Duration {
	m := d[0]
	for _, x := range d {
		m = min(m, x)
	}
	return m
}

func slicesMax(d []time.Duration) time.Duration {
	m := d[0]
	for _, x := range d {
		m = max(m, x)
	}
	return m
}

// TestFaultConnectionCapReturns503: over the per-address cap, the upgrade
// is refused with 503 while the call beside goes on.
func TestFaultConnectionCapReturns503(t *testing.T) {
	app := startApp(t, nil)
	alice, bob, stop := healthyCall(t, app) // 2 connections from 127.0.0.1
	defer stop()
	url := wsURLOf(app.URL(), "/ws")
	var open []*websocket.Conn
	defer func() {
		for _, ws := range open {
			_ = ws.Close()
		}
	}()
	for range 48 { // the default cap is 50 per address
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, ws)
	}
	_, resp, err := websocket.DefaultDialer.Dial(url, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("51st connection: %v %v, want 503", resp, err)
	}
	body, _ := io.ReadAll(resp.Body)
	if !strings.Contains(string(body), "too many connections") {
		t.Fatalf("503 body %q", body)
	}
	stillSignals(t, alice)
	stillSignals(t, bob)
}

// TestFaultHostileClientsBesideCall: a client that floods (closed 1008),
// one that never logs in (closed 1008 at the 10 s deadline) and one that
// stops reading (dropped when its writes time out), all at once beside a
// call whose media and signaling go on.
func TestFaultHostileClientsBesideCall(t *testing.T) {
	app := startApp(t, nil)
	alice, bob, stop := healthyCall(t, app)
	defer stop()
	watch := watchMedia(bob, alice)
	url := wsURLOf(app.URL(), "/ws")
	dial := func() *websocket.Conn {
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ws.Close() })
		return ws
	}
	flood, idle, stuck := dial(), dial(), dial()
	start := time.Now()
	type result struct {
		who  string
		code int
		at   time.Duration
	}
	results := make(chan result, 2)
	closeCode := func(who string, ws *websocket.Conn) {
		_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		for {
			if _, _, err := ws.ReadMessage(); err != nil {
				var ce *websocket.CloseError
				code := 0
				if errors.As(err, &ce) {
					code = ce.Code
				}
				results <- result{who, code, time.Since(start)}
				return
			}
		}
	}
	go closeCode("flood", flood)
	go closeCode("idle", idle)
	go func() {
		for range 1000 {
			if flood.WriteMessage(websocket.TextMessage, []byte(`{"type":"ping"}`)) != nil {
				return
			}
		}
	}()
	// The stuck client asks for big replies and never reads them.
	if err := stuck.WriteJSON(signaling.Message{Type: "login", Name: "stuck"}); err != nil {
		t.Fatal(err)
	}
	big := []byte(fmt.Sprintf(`{"type":%q}`, strings.Repeat("x", 200<<10)))
	stuckDone := make(chan struct{})
	go func() {
		defer close(stuckDone)
		for range 90 {
			if stuck.WriteMessage(websocket.TextMessage, big) != nil {
				return
			}
			time.Sleep(50 * time.Millisecond) // under the message rate limit
		}
	}()
	for range 2 {
		r := <-results
		t.Logf("%s closed with %d after %v", r.who, r.code, r.at.Round(10*time.Millisecond))
		if r.code != websocket.ClosePolicyViolation {
			t.Fatalf("%s: close code %d, want 1008", r.who, r.code)
		}
		if r.who == "idle" && r.at < 9*time.Second {
			t.Fatalf("idle connection closed after %v, before the 10 s login deadline", r.at)
		}
	}
	// The stuck client is dropped once the server's write to it timed out
	// (10 s): reading now, it finds what was buffered, then the end,
	// without a close frame (a dropped client gets none).
	<-stuckDone // about 4.5 s after start; the server's writer is blocked by then
	time.Sleep(time.Until(start.Add(17 * time.Second)))
	_ = stuck.SetReadDeadline(time.Now().Add(20 * time.Second))
	var err error
	for err == nil {
		_, _, err = stuck.ReadMessage()
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the client that stopped reading was not dropped")
	}
	if ce := (*websocket.CloseError)(nil); errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
		t.Fatalf("the stuck client was closed with %d, not dropped for not reading", ce.Code)
	}
	minPPS, held := watch.finish()
	t.Logf("stuck client dropped after %v; slowest second of video %d packets, at most %d held over 1 s", time.Since(start).Round(100*time.Millisecond), minPPS, held)
	assertNotHeld(t, held)
	stillSignals(t, alice)
	stillSignals(t, bob)
}
