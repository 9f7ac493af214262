package main

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"videochat/internal/browsertest"
)

// tabStats is what statsJS reports from a tab.
type tabStats struct {
	State          string  `json:"state"`
	LastEndReason  string  `json:"lastEndReason"`
	FramesDecoded  int     `json:"framesDecoded"`
	FreezeSeconds  float64 `json:"freeze"`
	FreezeCount    int     `json:"freezeCount"`
	PacketsLost    int     `json:"packetsLost"`
	VideoPackets   int     `json:"videoPackets"`
	NACKs          int     `json:"nackCount"`
	PLIs           int     `json:"pliCount"`
	AudioPackets   int     `json:"audioPackets"`
	VideoWidth     int     `json:"videoWidth"`
	TimeOrigin     float64 `json:"timeOrigin"`
	CallClicked    float64 `json:"callClicked"`
	FirstRemoteFrm float64 `json:"firstRemoteFrame"`
	Local, Remote  struct {
		Type     string `json:"type"`
		Address  string `json:"address"`
		Port     int    `json:"port"`
		Protocol string `json:"protocol"`
		Relay    string `json:"relayProtocol"`
	}
}

const statsJS = `(async () => {
  const a = window.app, out = {state: a.state, lastEndReason: a.lastEndReason || '',
    timeOrigin: performance.timeOrigin, callClicked: a.marks.callClicked || 0,
    firstRemoteFrame: a.marks.firstRemoteFrame || 0,
    videoWidth: document.getElementById('remote-video').videoWidth,
    framesDecoded: 0, freeze: 0, audioPackets: 0, local: {}, remote: {}};
  if (!a.pc) return out;
  const s = await a.pc.getStats(), byId = new Map();
  s.forEach(r => byId.set(r.id, r));
  s.forEach(r => {
    if (r.type === 'inbound-rtp' && r.kind === 'video') {
      out.framesDecoded = r.framesDecoded || 0; out.freeze = r.totalFreezesDuration || 0; out.freezeCount = r.freezeCount || 0;
      out.packetsLost = r.packetsLost || 0; out.videoPackets = r.packetsReceived || 0; out.nackCount = r.nackCount || 0; out.pliCount = r.pliCount || 0;
    }
    if (r.type === 'inbound-rtp' && r.kind === 'audio') out.audioPackets = r.packetsReceived || 0;
    if (r.type === 'transport' && r.selectedCandidatePairId) {
      const p = byId.get(r.selectedCandidatePairId), l = byId.get(p.localCandidateId), m = byId.get(p.remoteCandidateId);
      out.local = {type: l.candidateType, address: l.address, port: l.port, protocol: l.protocol, relayProtocol: l.relayProtocol || ''};
      out.remote = {type: m.candidateType, address: m.address, port: m.port, protocol: m.protocol};
    }
  });
  return out;
})()`

func stats(tab *browsertest.Tab) tabStats {
	var s tabStats
	tab.Eval(statsJS, &s)
	return s
}

// signIn opens the app in a new tab and signs in as name.
func signIn(t testing.TB, b *browsertest.Browser, url, name string) *browsertest.Tab {
	t.Helper()
	tab := b.Open(t, url)
	tab.WaitFor(`window.app && document.body.dataset.state === 'signin'`, 10*time.Second)
	tab.Eval(fmt.Sprintf(`(() => { document.getElementById('name-input').value = %q;
		document.getElementById('login-btn').click(); return true; })()`, name), new(bool))
	tab.WaitFor(`window.app.state === 'idle'`, 10*time.Second)
	return tab
}

// autoAccept makes the tab press Accept as soon as the incoming prompt shows.
func autoAccept(tab *browsertest.Tab) {
	tab.Eval(`(() => { const iv = setInterval(() => {
		if (!document.getElementById('incoming').hidden) { clearInterval(iv); document.getElementById('accept-btn').click(); }
	}, 2); return true; })()`, new(bool))
}

// browserCall signs two tabs in, calls from the first, accepts in the
// second, and waits until both decode remote video.
func browserCall(t *testing.T, b *browsertest.Browser, url string) (caller, callee *browsertest.Tab) {
	t.Helper()
	return browserCallAs(t, b, url, url)
}

// browserCallAs is browserCall with a page URL for each tab.
func browserCallAs(t *testing.T, b *browsertest.Browser, callerURL, calleeURL string) (caller, callee *browsertest.Tab) {
	t.Helper()
	caller = signIn(t, b, callerURL, "alice")
	callee = signIn(t, b, calleeURL, "bob")
	caller.WaitFor(`document.querySelector('#users [data-name="bob"]')`, 10*time.Second)
	idle := measure()
	defer func() {
		busy := measure()
		t.Logf("server cost of one active call: %d goroutines, %.0f KiB heap",
			busy.goroutines-idle.goroutines, float64(busy.heap-idle.heap)/1024)
	}()
	autoAccept(callee)
	caller.Eval(`(() => { document.querySelector('#users [data-name="bob"]').click(); return true; })()`, new(bool))
	for _, tab := range []*browsertest.Tab{caller, callee} {
		tab.WaitFor(`window.app.state === 'connected'`, 15*time.Second)
	}
	for _, tab := range []*browsertest.Tab{caller, callee} {
		waitDecoding(t, tab, 30)
	}
	return caller, callee
}

// waitDecoding waits until the tab decoded at least n remote video frames.
func waitDecoding(t *testing.T, tab *browsertest.Tab, n int) tabStats {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		s := stats(tab)
		if s.FramesDecoded >= n && s.VideoWidth > 0 && s.AudioPackets > 0 {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("remote media not decoding: %+v", s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

type usage struct {
	goroutines int
	heap       int64
}

// measure samples this process (the server; the browser runs outside).
func measure() usage {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return usage{runtime.NumGoroutine(), int64(m.HeapInuse)}
}

func TestBrowserCall(t *testing.T) {
	app := startApp(t, nil)
	b := browsertest.Launch(t)
	caller, callee := browserCall(t, b, app.URL())

	var serverPorts []int
	for _, a := range app.sfu.MediaAddrs() {
		serverPorts = append(serverPorts, a.Port)
	}
	sc, se := stats(caller), stats(callee)
	for name, s := range map[string]tabStats{"caller": sc, "callee": se} {
		// The media path ends at the server, not at the other tab.
		if !slices.Contains(serverPorts, s.Remote.Port) {
			t.Errorf("%s: selected pair ends at %s:%d, not at the server's media ports %v", name, s.Remote.Address, s.Remote.Port, serverPorts)
		}
	}
	if sc.Remote.Port == se.Local.Port && sc.Remote.Address == se.Local.Address {
		t.Error("caller's media path ends at the callee's tab")
	}
	// Frames keep coming, their packets read on the receive fast path
	// (sfu/rxfast.go): Chromium answers as DTLS client, so the server has
	// both tabs' keys.
	// Sent on the send fast path (sfu/txfast.go) too: the frames decode.
	rxBefore, txBefore := app.sfu.ReceivePath(), app.sfu.SendPath()
	before := sc.FramesDecoded
	after := waitDecoding(t, caller, before+20)
	rx, tx := app.sfu.ReceivePath(), app.sfu.SendPath()
	txFast, txAll := tx.Fast-txBefore.Fast, tx.Fast-txBefore.Fast+tx.Pion-txBefore.Pion
	t.Logf("send path while 20 frames were decoded: %d of %d RTP packets fast; since the start %+v", txFast, txAll, tx)
	if txAll == 0 || float64(txFast) < 0.95*float64(txAll) || tx.Errors != 0 {
		t.Errorf("%d of %d RTP packets sent on the fast path (want >= 95 %%), %d errors", txFast, txAll, tx.Errors)
	}
	fast, all := rx.Fast-rxBefore.Fast, rx.Fast-rxBefore.Fast+rx.Fallback-rxBefore.Fallback
	t.Logf("receive path while 20 frames were decoded: %d of %d RTP packets fast; since the start %+v", fast, all, rx)
	if all == 0 || float64(fast) < 0.95*float64(all) || rx.AuthFailures != 0 {
		t.Errorf("%d of %d RTP packets on the fast path (want >= 95 %%), %d authentication failures", fast, all, rx.AuthFailures)
	}
	// Chromium's RTCP (transport-wide feedback, reports) on the RTCP fast
	// path (sfu/rtcpfast.go), all of it authenticated.
	if rtcp := rx.RTCP - rxBefore.RTCP; rtcp == 0 || rx.RTCPFailures != 0 {
		t.Errorf("%d RTCP packets on the RTCP fast path while 20 frames were decoded, %d failures", rtcp, rx.RTCPFailures)
	}
	t.Logf("call to first remote frame: caller %.0f ms, callee %.0f ms (from pressing Call); frames %d->%d",
		sc.FirstRemoteFrm-sc.CallClicked,
		se.TimeOrigin+se.FirstRemoteFrm-(sc.TimeOrigin+sc.CallClicked), before, after.FramesDecoded)
	if sc.FirstRemoteFrm == 0 || se.FirstRemoteFrm == 0 {
		t.Error("the page did not record its first remote frame")
	}

	// Hang up from the caller; both return to idle.
	caller.Eval(`(() => { document.getElementById('hangup-btn').click(); return true; })()`, new(bool))
	for _, tab := range []*browsertest.Tab{caller, callee} {
		tab.WaitFor(`window.app.state === 'idle' && window.app.pc === null`, 10*time.Second)
	}
	if r := stats(callee).LastEndReason; r != "hangup" {
		t.Errorf("callee's end reason %q, want hangup", r)
	}
}
