package main

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"videochat/internal/browsertest"
	"videochat/internal/netns"
)

// connTracker wraps the server's listener and remembers every accepted
// connection with the first bytes read from it (the HTTP request), so a test
// can cut the TCP connection under a given WebSocket without a close frame.
type connTracker struct {
	net.Listener
	mu    sync.Mutex
	conns []*trackedConn
}

type trackedConn struct {
	net.Conn
	mu     sync.Mutex
	head   []byte // the first bytes read: request line and headers
	closed bool
}

func (l *connTracker) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c}
	l.mu.Lock()
	l.conns = append(l.conns, tc)
	l.mu.Unlock()
	return tc, nil
}

func (c *trackedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		if room := 4096 - len(c.head); room > 0 {
			c.head = append(c.head, p[:min(n, room)]...)
		}
		c.mu.Unlock()
	}
	return n, err
}

func (c *trackedConn) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	return c.Conn.Close()
}

// isWebSocketFor reports whether the connection is an open WebSocket whose
// upgrade request named host in its Host header.
func (c *trackedConn) isWebSocketFor(host string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := bytes.ToLower(c.head)
	return !c.closed && bytes.Contains(h, []byte("\r\nupgrade: websocket")) &&
		bytes.Contains(h, []byte("\r\nhost: "+strings.ToLower(host)+"\r\n"))
}

// cutWebSockets closes the TCP connection of every open WebSocket that was
// opened to host (no close frame: the server's reader sees an error, the
// browser a FIN) and reports how many it cut.
func (l *connTracker) cutWebSockets(host string) int {
	l.mu.Lock()
	conns := append([]*trackedConn(nil), l.conns...)
	l.mu.Unlock()
	n := 0
	for _, c := range conns {
		if c.isWebSocketFor(host) {
			_ = c.Close()
			n++
		}
	}
	return n
}

// watchCallJS records, in the page, every text the status line shows and
// whether the page ever leaves the call screen.
const watchCallJS = `(() => {
  const status = document.getElementById('status');
  window.__seen = [status.textContent]; window.__left = '';
  const note = () => {
    const st = status.textContent;
    if (window.__seen[window.__seen.length - 1] !== st) window.__seen.push(st);
    if (!window.__left && (window.app.state !== 'connected' || document.getElementById('call-view').hidden))
      window.__left = window.app.state + ': ' + st;
  };
  new MutationObserver(note).observe(status, {childList: true, characterData: true, subtree: true});
  new MutationObserver(note).observe(document.body, {attributes: true});
  setInterval(note, 20);
  return true;
})()`

type callWatch struct {
	Seen []string `json:"seen"`
	Left string   `json:"left"`
}

func watched(tab *browsertest.Tab) callWatch {
	var w callWatch
	tab.Eval(`({seen: window.__seen, left: window.__left})`, &w)
	return w
}

// connHooks is what the page exposes about its connections.
type connHooks struct {
	Connection string  `json:"connection"`
	MediaState string  `json:"mediaState"`
	PeerState  string  `json:"peerState"`
	Resumes    int     `json:"resumes"`
	Attempts   int     `json:"reconnectAttempts"`
	ICERestart int     `json:"iceRestarts"`
	Status     string  `json:"status"`
	TimeOrigin float64 `json:"timeOrigin"`
	Events     []struct {
		T    float64 `json:"t"`
		What string  `json:"what"`
	} `json:"events"`
}

func hooks(tab *browsertest.Tab) connHooks {
	var h connHooks
	tab.Eval(`(() => { const a = window.app; return {connection: a.connection, mediaState: a.mediaState,
		peerState: a.peerState, resumes: a.resumes, reconnectAttempts: a.reconnectAttempts,
		iceRestarts: a.iceRestarts, status: a.status, timeOrigin: performance.timeOrigin, events: a.events}; })()`, &h)
	return h
}

// logEvents logs the page's connection events after since, in ms relative to
// since.
func logEvents(t *testing.T, who string, h connHooks, since time.Time) {
	t.Helper()
	var b strings.Builder
	for _, e := range h.Events {
		at := h.TimeOrigin + e.T - float64(since.UnixNano())/1e6
		if at < -1000 {
			continue
		}
		fmt.Fprintf(&b, "\n  %+7.0f ms  %s", at, e.What)
	}
	t.Logf("%s's connection events (ms from the disruption):%s", who, b.String())
}

// TestBrowserICERestartAfterOutage cuts the caller's network off entirely for
// 5 s in the middle of a call (every packet in and out of its namespace is
// dropped: media, ICE checks and the WebSocket alike). The call must carry
// on by itself: the page shows "Reconnecting…" during the outage, never
// leaves the call screen, and decodes frames again within 3 s of the
// network's return (measured 0.21–0.40 s both ways at load 9–13, up to
// 2.3 s at load 20: the SFU asks for keyframes as soon as media and RTCP
// come back, whether or not ICE noticed the outage; before that, 1 run in
// ~12 took 4.2 s, Chromium's own 3 s wait for a decodable frame). Then a
// network change restarts ICE.
func TestBrowserICERestartAfterOutage(t *testing.T) {
	caller, callee := callThroughOutage(t, 5*time.Second, 3*time.Second, nil)

	// A network change (the page's 'online' event; a new Wi-Fi, say)
	// restarts ICE at once: the server answers with fresh credentials and
	// the media moves to the new candidate pair.
	restartICE(t, caller, callee, func() {
		caller.Eval(`(() => { window.dispatchEvent(new Event('online')); return true; })()`, new(bool))
	})
	for who, w := range map[string]callWatch{"caller": watched(caller), "callee": watched(callee)} {
		if w.Left != "" {
			t.Errorf("the %s's page left the call screen (%s)", who, w.Left)
		}
	}
}

// TestBrowserResumeAfterLongOutage is the same with an 11 s outage: long
// enough for Chromium to call ICE disconnected (the page restarts ICE while
// the WebSocket is dark) and for the page's heartbeat to declare the
// WebSocket dead and reconnect (in the dark first). Once the network is
// back the page resumes its session, sends what it queued, and the call
// goes on.
func TestBrowserResumeAfterLongOutage(t *testing.T) {
	// After 5 s of unanswered checks Chromium stops sending media on the
	// pair until a check succeeds again, and a keyframe must follow: allow
	// a second more than after the short outage.
	caller, callee := callThroughOutage(t, 11*time.Second, 4*time.Second, nil)
	caller.WaitFor(`window.app.connection === 'open' && window.app.mediaState === 'connected'`, 15*time.Second)
	h := hooks(caller)
	t.Logf("alice: %d resumes, %d ICE restarts, %d reconnect attempts", h.Resumes, h.ICERestart, h.Attempts)
	if h.Resumes < 1 {
		t.Errorf("the caller's WebSocket survived an 11 s outage unnoticed (no resume)")
	}
	// Signaling works afterwards: an ICE restart completes.
	restartICE(t, caller, callee, func() {
		caller.Eval(`(() => { window.dispatchEvent(new Event('online')); return true; })()`, new(bool))
	})
	for who, w := range map[string]callWatch{"caller": watched(caller), "callee": watched(callee)} {
		if w.Left != "" {
			t.Errorf("the %s's page left the call screen (%s)", who, w.Left)
		}
	}
}

// TestBrowserICERestartAfterFailedOutage cuts the caller off for 20 s (the
// server's grace period raised to 60 s): Chromium declares the connection
// failed after ~15 s and stops checking the old pair, so the media can only
// come back by an ICE restart, whose offer waits for the WebSocket's resume.
func TestBrowserICERestartAfterFailedOutage(t *testing.T) {
	caller, callee := callThroughOutage(t, 20*time.Second, 8*time.Second, func(c *Config) { c.Grace = 60 * time.Second })
	h := hooks(caller)
	t.Logf("alice: %d resumes, %d ICE restarts, %d reconnect attempts", h.Resumes, h.ICERestart, h.Attempts)
	if h.Resumes < 1 || h.ICERestart < 1 {
		t.Errorf("after a 20 s outage: %d resumes, %d ICE restarts; want both", h.Resumes, h.ICERestart)
	}
	if !hasEventPrefix(h, "ice disconnected, connection failed") && !hasEventPrefix(h, "ice failed") {
		t.Log("note: Chromium did not report failed during the outage")
	}
	for who, w := range map[string]callWatch{"caller": watched(caller), "callee": watched(callee)} {
		if w.Left != "" {
			t.Errorf("the %s's page left the call screen (%s)", who, w.Left)
		}
	}
}

// callThroughOutage sets up a call from alice (a browser in a namespace) to
// bob (a browser outside), cuts alice's namespace off for outage, and
// checks that the media comes back by itself within limit of the network's
// return, with "Reconnecting…" on alice's page meanwhile and neither page
// leaving the call screen.
func callThroughOutage(t *testing.T, outage, limit time.Duration, mod func(*Config)) (caller, callee *browsertest.Tab) {
	t.Helper()
	ns := netns.New(t)
	app, nsBrowserB, nsURL := nsBrowser(t, ns, mod)
	other := browsertest.Launch(t)

	caller = signIn(t, nsBrowserB, nsURL, "alice")
	callee = signIn(t, other, app.URL(), "bob")
	caller.WaitFor(`document.querySelector('#users [data-name="bob"]')`, 10*time.Second)
	autoAccept(callee)
	caller.Eval(`(() => { document.querySelector('#users [data-name="bob"]').click(); return true; })()`, new(bool))
	for _, tab := range []*browsertest.Tab{caller, callee} {
		tab.WaitFor(`window.app.state === 'connected'`, 15*time.Second)
		waitDecoding(t, tab, 30)
		tab.Eval(watchCallJS, new(bool))
	}

	ns.DropAll()
	start := time.Now()
	restored := false
	defer func() {
		if !restored {
			ns.Restore()
		}
	}()
	sawReconnecting := time.Duration(0)
	for time.Since(start) < outage {
		if sawReconnecting == 0 && strings.HasPrefix(hooks(caller).Status, "Reconnecting") {
			sawReconnecting = time.Since(start)
		}
		time.Sleep(100 * time.Millisecond)
	}
	before := stats(caller).FramesDecoded
	beforeCallee := stats(callee).FramesDecoded
	ns.Restore()
	restored = true
	back := time.Now()
	t.Logf("outage %v: the caller's page showed Reconnecting… after %v", outage, sawReconnecting.Round(10*time.Millisecond))

	// Frames decode again, both ways.
	var callerBack, calleeBack time.Duration
	for callerBack == 0 || calleeBack == 0 {
		if time.Since(back) > 15*time.Second {
			logEvents(t, "alice", hooks(caller), start)
			t.Fatalf("media not back 15 s after the network: caller %v, callee %v (0 = not yet); %+v", callerBack, calleeBack, hooks(caller))
		}
		if callerBack == 0 && stats(caller).FramesDecoded > before+2 {
			callerBack = time.Since(back)
		}
		if calleeBack == 0 && stats(callee).FramesDecoded > beforeCallee+2 {
			calleeBack = time.Since(back)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("network back -> frames decoding again: caller (bob's video) %v, callee (alice's video) %v",
		callerBack.Round(10*time.Millisecond), calleeBack.Round(10*time.Millisecond))
	caller.WaitFor(`window.app.mediaState === 'connected' && window.app.connection === 'open'`, 15*time.Second)
	resumedAfter := time.Since(back)
	callee.WaitFor(`window.app.status === 'Connected with alice'`, 10*time.Second)
	waitDecoding(t, caller, stats(caller).FramesDecoded+20)
	waitDecoding(t, callee, stats(callee).FramesDecoded+20)

	ha, hb := hooks(caller), hooks(callee)
	logEvents(t, "alice", ha, start)
	logEvents(t, "bob", hb, start)
	wa, wb := watched(caller), watched(callee)
	t.Logf("alice: %d ICE restarts, %d resumes (signaling and media both up %v after the network); statuses %q",
		ha.ICERestart, ha.Resumes, resumedAfter.Round(10*time.Millisecond), wa.Seen)
	t.Logf("bob: statuses %q", wb.Seen)
	if sawReconnecting == 0 {
		t.Error(`the caller's page did not show "Reconnecting…" during the outage`)
	}
	for who, w := range map[string]callWatch{"caller": wa, "callee": wb} {
		if w.Left != "" {
			t.Errorf("the %s's page left the call screen (%s)", who, w.Left)
		}
	}
	if callerBack > limit || calleeBack > limit {
		t.Errorf("frames decoded again %v (caller) / %v (callee) after the network came back, want within %v", callerBack, calleeBack, limit)
	}
	return caller, callee
}

// selectedPairJS reports the remote ICE ufrag and address of the tab's
// selected candidate pair (an ICE restart changes the ufrag).
const selectedPairJS = `(() => {
  const pc = window.app.pc, s = pc && pc.getSenders().find(s => s.transport);
  const p = s && s.transport.iceTransport.getSelectedCandidatePair();
  return p && p.remote ? p.remote.usernameFragment + ' ' + p.remote.address + ':' + p.remote.port : '';
})()`

// restartICE triggers an ICE restart in tab (by calling trigger), waits
// until it completed (the server's answer applied and a new candidate pair
// selected) and checks that frames keep coming both ways.
func restartICE(t *testing.T, tab, other *browsertest.Tab, trigger func()) {
	t.Helper()
	h0 := hooks(tab)
	var pair0 string
	tab.Eval(selectedPairJS, &pair0)
	f0, g0 := stats(tab), stats(other)
	start := time.Now()
	trigger()
	var pair string
	var newPair time.Duration
	for newPair == 0 {
		tab.Eval(selectedPairJS, &pair)
		if pair != pair0 && pair != "" {
			newPair = time.Since(start)
			break
		}
		if time.Since(start) > 10*time.Second {
			logEvents(t, "caller", hooks(tab), start)
			t.Fatalf("ICE restart: no new candidate pair within 10 s (%s, before %s)", pair, pair0)
		}
		time.Sleep(20 * time.Millisecond)
	}
	h := hooks(tab)
	logEvents(t, "caller", h, start)
	t.Logf("ICE restart: a new candidate pair selected %v after the trigger (%s -> %s)",
		newPair.Round(time.Millisecond), pair0, pair)
	if h.ICERestart != h0.ICERestart+1 {
		t.Errorf("%d ICE restarts, want %d", h.ICERestart, h0.ICERestart+1)
	}
	f1 := waitDecoding(t, tab, f0.FramesDecoded+20)
	g1 := waitDecoding(t, other, g0.FramesDecoded+20)
	t.Logf("across the restart: freezes %d -> %d (%.2f s -> %.2f s) here, %d -> %d (%.2f s -> %.2f s) at the other side",
		f0.FreezeCount, f1.FreezeCount, f0.FreezeSeconds, f1.FreezeSeconds, g0.FreezeCount, g1.FreezeCount, g0.FreezeSeconds, g1.FreezeSeconds)
}

// TestBrowserResumeAfterWebSocketCut cuts the TCP connection under the
// caller's WebSocket at the server (no close frame) during a call: the media
// must not notice, and the page must resume its session by itself without
// leaving the call screen.
func TestBrowserResumeAfterWebSocketCut(t *testing.T) {
	var tracker *connTracker
	app := startApp(t, func(c *Config) {
		c.wrapListener = func(ln net.Listener) net.Listener {
			tracker = &connTracker{Listener: ln}
			return tracker
		}
	})
	b := browsertest.Launch(t)
	// The caller opens the page as 127.0.0.1 and the callee as localhost,
	// so the caller's WebSocket is the one whose Host is 127.0.0.1.
	port := app.ln.Addr().(*net.TCPAddr).Port
	callerHost := fmt.Sprintf("127.0.0.1:%d", port)
	caller, callee := browserCallAs(t, b, "http://"+callerHost+"/", app.URL())
	for _, tab := range []*browsertest.Tab{caller, callee} {
		tab.Eval(watchCallJS, new(bool))
	}
	callerFrames, calleeFrames := stats(caller).FramesDecoded, stats(callee).FramesDecoded

	start := time.Now()
	if n := tracker.cutWebSockets(callerHost); n != 1 {
		t.Fatalf("cut %d WebSockets opened to %s, want 1", n, callerHost)
	}
	var resumed time.Duration
	for resumed == 0 {
		h := hooks(caller)
		if h.Resumes >= 1 {
			resumed = time.Since(start)
			break
		}
		if time.Since(start) > 15*time.Second {
			logEvents(t, "alice", h, start)
			t.Fatalf("the caller did not resume within 15 s: %+v", h)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("WebSocket cut -> session resumed after %v", resumed.Round(time.Millisecond))
	caller.WaitFor(`window.app.connection === 'open' && window.app.status === 'Connected with bob'`, 5*time.Second)
	callee.WaitFor(`window.app.status === 'Connected with alice'`, 10*time.Second)

	// The media never depended on the WebSocket.
	sc := waitDecoding(t, caller, callerFrames+20)
	se := waitDecoding(t, callee, calleeFrames+20)
	t.Logf("frames since the cut: caller %d, callee %d", sc.FramesDecoded-callerFrames, se.FramesDecoded-calleeFrames)

	// The resumed socket carries signaling: a ping round trip, and the other
	// side hears alice's state through the server.
	ha, hb := hooks(caller), hooks(callee)
	logEvents(t, "alice", ha, start)
	logEvents(t, "bob", hb, start)
	wa, wb := watched(caller), watched(callee)
	t.Logf("alice: statuses %q; bob: statuses %q", wa.Seen, wb.Seen)
	if ha.Resumes != 1 || ha.ICERestart != 0 {
		t.Errorf("caller: %d resumes, %d ICE restarts; want 1 and 0", ha.Resumes, ha.ICERestart)
	}
	if !containsPrefix(wa.Seen, "Reconnecting") {
		t.Error(`the caller's page never showed "Reconnecting…"`)
	}
	if !hasEvent(hb, "alice reconnecting") || !hasEvent(hb, "alice connected") {
		t.Error("the callee's page was not told (callstate) that alice was reconnecting and back")
	}
	for who, w := range map[string]callWatch{"caller": wa, "callee": wb} {
		if w.Left != "" {
			t.Errorf("the %s's page left the call screen (%s)", who, w.Left)
		}
	}

	// Signing out closes the resumed WebSocket with a close frame: the
	// session ends at once (no grace period), and so does bob's call.
	signOut := time.Now()
	caller.Eval(`(() => { document.getElementById('signout-btn').click(); return true; })()`, new(bool))
	caller.WaitFor(`window.app.state === 'signin' && window.app.pc === null && !document.getElementById('signin-view').hidden`, 5*time.Second)
	callee.WaitFor(`window.app.state === 'idle' && window.app.pc === null`, 5*time.Second)
	var reason string
	callee.Eval(`window.app.lastEndReason`, &reason)
	t.Logf("sign-out: bob's call ended after %v (%s)", time.Since(signOut).Round(time.Millisecond), reason)
	if time.Since(signOut) > 3*time.Second {
		t.Errorf("bob's call ended %v after alice signed out, want at once", time.Since(signOut))
	}
}

func containsPrefix(list []string, prefix string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, prefix) {
			return true
		}
	}
	return false
}

func hasEventPrefix(h connHooks, prefix string) bool {
	for _, e := range h.Events {
		if strings.HasPrefix(e.What, prefix) {
			return true
		}
	}
	return false
}

func hasEvent(h connHooks, what string) bool {
	for _, e := range h.Events {
		if e.What == what {
			return true
		}
	}
	return false
}

// TestBrowserResumeRefused cuts the caller's WebSocket when its session
// token is no good (here: replaced in the page; in life: expired after the
// grace period, or the server restarted). The server refuses the resume:
// the page ends the call locally and goes back to sign-in, saying why.
func TestBrowserResumeRefused(t *testing.T) {
	var tracker *connTracker
	app := startApp(t, func(c *Config) {
		c.wrapListener = func(ln net.Listener) net.Listener {
			tracker = &connTracker{Listener: ln}
			return tracker
		}
	})
	b := browsertest.Launch(t)
	callerHost := fmt.Sprintf("127.0.0.1:%d", app.ln.Addr().(*net.TCPAddr).Port)
	caller, _ := browserCallAs(t, b, "http://"+callerHost+"/", app.URL())

	caller.Eval(`(() => { window.app.client.session = 'no-such-session'; return true; })()`, new(bool))
	start := time.Now()
	if n := tracker.cutWebSockets(callerHost); n != 1 {
		t.Fatalf("cut %d WebSockets opened to %s, want 1", n, callerHost)
	}
	caller.WaitFor(`window.app.state === 'signin' && window.app.pc === null && !document.getElementById('signin-view').hidden`, 10*time.Second)
	var msg string
	caller.Eval(`document.getElementById('login-error').textContent`, &msg)
	t.Logf("refused resume: back at sign-in after %v, saying %q", time.Since(start).Round(time.Millisecond), msg)
	if !strings.Contains(msg, "could not be resumed") {
		t.Errorf("sign-in says %q, want why the session ended", msg)
	}
	logEvents(t, "alice", hooks(caller), start)
}
