package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"videochat/internal/browsertest"
)

// Browser tests of what a person sees (issue 13): incoming calls that are
// noticed, keyboard use, human messages, remote mute, the quality panel,
// the device picker, media that closes with the call, joining without a
// camera or without permission, and an axe-core accessibility check of each
// screen. With VIDEOCHAT_SCREENSHOTS=1 they save the README's screenshots
// into docs/.

// mediaHookJS wraps getUserMedia: mode "denied" refuses like a blocked
// permission, "nocamera" has no camera; every track handed out is kept in
// window.__tracks, and window.__maxLiveCams is the most camera tracks ever
// live at once (checked at every getUserMedia and every 20 ms).
const mediaHookJS = `((mode) => {
  const md = navigator.mediaDevices, gum = md.getUserMedia.bind(md), enumerate = md.enumerateDevices.bind(md);
  window.__tracks = []; window.__maxLiveCams = 0;
  const count = () => { const n = window.__tracks.filter(t => t.kind === 'video' && t.readyState === 'live').length;
    window.__maxLiveCams = Math.max(window.__maxLiveCams, n); };
  md.getUserMedia = async (c) => {
    if (mode === 'denied') throw new DOMException('Permission denied', 'NotAllowedError');
    if (mode === 'nocamera' && c.video) throw new DOMException('Requested device not found', 'NotFoundError');
    const s = await gum(c);
    window.__tracks.push(...s.getTracks()); count();
    return s;
  };
  if (mode === 'nocamera') md.enumerateDevices = async () => (await enumerate()).filter(d => d.kind !== 'videoinput');
  setInterval(count, 20);
  return true;
})`

// hiddenTabJS makes the page believe it is in a background tab and replaces
// Notification with a recorder (permission granted).
const hiddenTabJS = `(() => {
  Object.defineProperty(document, 'visibilityState', {configurable: true, get: () => 'hidden'});
  Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
  window.__notes = [];
  window.Notification = class {
    static permission = 'granted';
    static requestPermission() { return Promise.resolve('granted'); }
    constructor(title, opts) { window.__notes.push({title, body: (opts && opts.body) || ''}); }
    close() {}
  };
  return true;
})()`

// bannerWatchJS records every time the error banner or the "no sound"
// notice becomes visible.
const bannerWatchJS = `(() => {
  window.__banners = [];
  const check = () => {
    for (const id of ['error', 'sound-off']) {
      const el = document.getElementById(id);
      if (!el.hidden && !window.__banners.includes(id + ': ' + el.textContent)) window.__banners.push(id + ': ' + el.textContent);
    }
  };
  new MutationObserver(check).observe(document.body, {attributes: true, subtree: true, childList: true, characterData: true});
  return true;
})()`

func evalJS[T any](tab *browsertest.Tab, expr string) T {
	var v T
	tab.Eval(expr, &v)
	return v
}

func click(tab *browsertest.Tab, selector string) {
	tab.Eval(fmt.Sprintf(`(() => { document.querySelector(%q).click(); return true; })()`, selector), new(bool))
}

// liveTracks lists the tab's getUserMedia tracks that are not ended.
func liveTracks(tab *browsertest.Tab) []string {
	return evalJS[[]string](tab, `window.__tracks.filter(t => t.readyState !== 'ended').map(t => t.kind + ' ' + t.label)`)
}

// shot saves a screenshot into docs/ when VIDEOCHAT_SCREENSHOTS is set.
func shot(t *testing.T, tab *browsertest.Tab, name string) {
	if os.Getenv("VIDEOCHAT_SCREENSHOTS") == "" {
		return
	}
	if err := os.MkdirAll("docs", 0o755); err != nil {
		t.Fatal(err)
	}
	tab.Screenshot(filepath.Join("docs", name+".png"))
}

// axeCheck runs axe-core in the page and fails on serious or critical
// violations. axe-core is installed by `make deps` (npm) into the user's
// cache directory; AXE_CORE may name the file instead.
func axeCheck(t *testing.T, tab *browsertest.Tab, screen string) {
	t.Helper()
	src := axeSource(t)
	tab.Eval(`window.axe ? true : (() => { `+src+`; return true; })()`, new(bool))
	var bad []string
	tab.Eval(`axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice']},
	    resultTypes: ['violations']}).then(r => r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
	    .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')))`, &bad)
	for _, v := range bad {
		t.Errorf("accessibility, %s screen: %s", screen, v)
	}
}

var axeCache string

func axeSource(t *testing.T) string {
	t.Helper()
	if axeCache != "" {
		return axeCache
	}
	path := os.Getenv("AXE_CORE")
	if path == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			t.Fatalf("axe-core: %v", err)
		}
		path = filepath.Join(dir, "videochat-npm", "node_modules", "axe-core", "axe.min.js")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("axe-core missing (%v): run `make deps` (npm install axe-core into ~/.cache/videochat-npm) or set AXE_CORE=/path/to/axe.min.js", err)
	}
	axeCache = string(b)
	return axeCache
}

func text(tab *browsertest.Tab, id string) string {
	return evalJS[string](tab, fmt.Sprintf(`document.getElementById(%q).textContent`, id))
}

func noUndefined(t *testing.T, tab *browsertest.Tab, who string) {
	t.Helper()
	if s := evalJS[string](tab, `document.body.innerText + [...document.querySelectorAll('input')].map(i => i.value + i.placeholder).join(' ')`); strings.Contains(s, "undefined") {
		t.Errorf("%s: the page shows raw text: %q", who, s)
	}
}

// TestBrowserUI: alice (desktop, 1280×800) and bob (a phone, 390×844, in a
// background tab) go through a declined call, a missed call and a call with
// mute, the quality panel and a camera switch, all by keyboard where a
// person would use it.
func TestBrowserUI(t *testing.T) {
	app := startApp(t, nil)
	b := browsertest.Launch(t, chromedp.Flag("use-fake-device-for-media-stream", "device-count=3"))

	alice := b.Open(t, app.URL())
	alice.Viewport(1280, 800, false)
	alice.WaitFor(`window.app && document.body.dataset.state === 'signin'`, 10*time.Second)
	axeCheck(t, alice, "sign-in")
	shot(t, alice, "signin")
	alice = signInTab(t, alice, "alice")
	bob := signIn(t, b, app.URL(), "bob")
	bob.Viewport(390, 844, true)
	alice.WaitFor(`document.querySelector('#users [data-name="bob"]')`, 10*time.Second)
	if got := evalJS[string](alice, `document.activeElement.id`); got != "online-heading" {
		t.Errorf("focus after sign-in on %q, want the list of people", got)
	}
	axeCheck(t, alice, "idle")
	for _, tab := range []*browsertest.Tab{alice, bob} {
		tab.Eval(mediaHookJS+`('normal')`, new(bool))
	}
	if evalJS[int](alice, `window.__tracks.length`) != 0 {
		t.Error("the camera opened before any call")
	}
	bob.Eval(hiddenTabJS, new(bool))
	alice.Eval(bannerWatchJS, new(bool))

	// 1. A declined call: bob's background tab rings and notifies; Esc declines.
	click(alice, `#users [data-name="bob"]`)
	bob.WaitFor(`!document.getElementById('incoming').hidden`, 10*time.Second)
	bob.WaitFor(`window.__notes.length > 0 && window.app.ringerAudio === 'running' && document.title.includes('alice')`, 3*time.Second)
	if n := evalJS[[]map[string]string](bob, `window.__notes`); n[0]["title"] != "alice is calling" {
		t.Errorf("notification %+v", n)
	}
	if got := evalJS[string](bob, `document.activeElement.id`); got != "accept-btn" {
		t.Errorf("focus on %q when the call came in, want accept-btn", got)
	}
	axeCheck(t, bob, "incoming call")
	shot(t, bob, "incoming")
	bob.Key(kb.Escape)
	alice.WaitFor(`window.app.state === 'idle' && window.app.status === 'bob declined the call'`, 10*time.Second)
	bob.WaitFor(`window.app.state === 'idle' && !window.app.ringing && document.title === 'Video chat'`, 5*time.Second)
	if s := text(bob, "status"); s != "You declined the call from alice" {
		t.Errorf("bob's status after declining: %q", s)
	}
	alice.WaitFor(`window.__tracks.length > 0 && window.__tracks.every(t => t.readyState === 'ended')`, 5*time.Second)

	// 2. A missed call: alice gives up while bob's phone rings.
	click(alice, `#users [data-name="bob"]`)
	bob.WaitFor(`!document.getElementById('incoming').hidden`, 10*time.Second)
	click(alice, `#hangup-btn`)
	bob.WaitFor(`window.app.state === 'idle' && document.getElementById('missed').textContent.includes('Missed call from alice')`, 10*time.Second)
	if m := text(bob, "missed"); !regexp.MustCompile(`Missed call from alice, \d\d:\d\dCall back`).MatchString(m) {
		t.Errorf("missed-call line %q", m)
	}
	if s := text(alice, "status"); s != "You cancelled the call to bob" {
		t.Errorf("alice's status after cancelling: %q", s)
	}

	// 3. A call, accepted with Enter.
	click(alice, `#users [data-name="bob"]`)
	bob.WaitFor(`!document.getElementById('incoming').hidden && document.activeElement.id === 'accept-btn'`, 10*time.Second)
	bob.Key("\r")
	for _, tab := range []*browsertest.Tab{alice, bob} {
		tab.WaitFor(`window.app.state === 'connected'`, 15*time.Second)
		waitDecoding(t, tab, 30)
	}
	if w := evalJS[[]string](alice, `window.__banners`); len(w) != 0 {
		t.Errorf("alice saw banners during declined/cancelled/accepted calls: %q", w)
	}
	alice.WaitFor(`/^0:0[1-9]$/.test(document.getElementById('call-timer').textContent)`, 5*time.Second)
	if s := text(bob, "status"); s != "Connected with alice" {
		t.Errorf("bob's status %q", s)
	}

	// Remote mute and camera off show on the other side.
	click(alice, "#mute-btn")
	bob.WaitFor(`!document.getElementById('remote-muted').hidden && document.getElementById('remote-muted').textContent === 'alice is muted'`, 5*time.Second)
	click(alice, "#camera-btn")
	bob.WaitFor(`!document.getElementById('remote-placeholder').hidden && document.getElementById('remote-placeholder').textContent === "alice's camera is off"`, 5*time.Second)
	if p := evalJS[[]string](alice, `['mute-btn', 'camera-btn'].map(id => document.getElementById(id).getAttribute('aria-pressed'))`); p[0] != "true" || p[1] != "true" {
		t.Errorf("aria-pressed of mute and camera: %v", p)
	}
	click(alice, "#mute-btn")
	click(alice, "#camera-btn")
	bob.WaitFor(`document.getElementById('remote-muted').hidden && document.getElementById('remote-placeholder').hidden`, 5*time.Second)

	// The quality panel: live numbers and the path in words.
	click(alice, "#quality-btn")
	alice.WaitFor(`(q => q && q.inKbps > 0 && q.outKbps > 0 && q.rttMs > 0 && q.path)(window.app.quality)
		&& /\d+ ms/.test(document.getElementById('q-rtt').textContent) && /[1-9]\d* (k|M)bit\/s/.test(document.getElementById('q-in').textContent)`, 10*time.Second)
	q := evalJS[map[string]any](alice, `window.app.quality`)
	if path := text(alice, "q-path"); path != "direct UDP" {
		t.Errorf("path %q, want direct UDP", path)
	}
	t.Logf("quality panel: in %.0f kbit/s, out %.0f kbit/s, RTT %.1f ms, loss %.1f %%, %v×%v %v fps, %v, %v",
		q["inKbps"], q["outKbps"], q["rttMs"], q["lossPct"], q["width"], q["height"], q["fps"], q["path"], q["level"])
	axeCheck(t, alice, "call")
	shot(t, alice, "call")
	shot(t, bob, "phone")

	// The device picker lists the fake devices; switching the camera mid-call
	// keeps bob decoding, with one camera live at a time. (The last fake
	// camera is taken: Chromium's fake_device_1 delivers Y16, a depth format
	// that its encoder sends no frames of.)
	click(alice, "#devices-btn")
	alice.WaitFor(`document.getElementById('camera-select').options.length >= 2 && document.getElementById('mic-select').options.length >= 1`, 5*time.Second)
	axeCheck(t, alice, "devices")
	before := stats(bob).FramesDecoded
	oldCam := evalJS[string](alice, `window.app.pc.getSenders().find(s => s.track && s.track.kind === 'video').track.getSettings().deviceId`)
	alice.Eval(`(() => { const s = document.getElementById('camera-select');
		s.value = [...s.options].map(o => o.value).filter(v => v !== `+jsonString(oldCam)+`).pop();
		s.dispatchEvent(new Event('change')); return true; })()`, new(bool))
	alice.WaitFor(`(s => s && s.track.readyState === 'live' && s.track.getSettings().deviceId !== `+jsonString(oldCam)+`)
		(window.app.pc.getSenders().find(s => s.track && s.track.kind === 'video'))`, 5*time.Second)
	waitDecoding(t, bob, before+30)
	alice.Run(chromedp.Click("#devices-done", chromedp.ByID))
	alice.WaitFor(`!document.getElementById('devices').open`, 5*time.Second)

	// Hang up: every local track ends on both sides; human statuses.
	// Bob hangs up with the keyboard: focus went to Hang up when the call
	// connected (Accept, which had it, is gone).
	if got := evalJS[string](bob, `document.activeElement.id`); got != "hangup-btn" {
		t.Errorf("bob's focus in the call on %q, want hangup-btn", got)
	}
	bob.Run(chromedp.Focus("#hangup-btn", chromedp.ByID))
	bob.Key("\r")
	for _, tab := range []*browsertest.Tab{alice, bob} {
		tab.WaitFor(`window.app.state === 'idle' && window.app.pc === null`, 10*time.Second)
		tab.WaitFor(`window.__tracks.every(t => t.readyState === 'ended')`, 5*time.Second)
	}
	if s := text(alice, "status"); s != "bob hung up" {
		t.Errorf("alice's status after bob hung up: %q", s)
	}
	if s := text(bob, "status"); s != "You ended the call with alice" {
		t.Errorf("bob's status after hanging up: %q", s)
	}
	for name, tab := range map[string]*browsertest.Tab{"alice": alice, "bob": bob} {
		if n := evalJS[int](tab, `window.__maxLiveCams`); n != 1 {
			t.Errorf("%s: at most %d camera streams live at once, want 1", name, n)
		}
		noUndefined(t, tab, name)
	}
}

// TestBrowserWithoutCamera: carol blocked the camera and microphone, dave
// has no camera, fred's page is insecure (no camera API at all); erin has
// both. Carol takes a call and makes one receive-only, dave joins with sound
// only, fred takes a call receive-only.
func TestBrowserWithoutCamera(t *testing.T) {
	app := startApp(t, nil)
	b := browsertest.Launch(t)
	carol := signIn(t, b, app.URL(), "carol")
	dave := signIn(t, b, app.URL(), "dave")
	erin := signIn(t, b, app.URL(), "erin")
	carol.Eval(mediaHookJS+`('denied')`, new(bool))
	dave.Eval(mediaHookJS+`('nocamera')`, new(bool))
	erin.Eval(mediaHookJS+`('normal')`, new(bool))
	erin.WaitFor(`document.querySelector('#users [data-name="carol"]') && document.querySelector('#users [data-name="dave"]')`, 10*time.Second)

	hangUp := func(tabs ...*browsertest.Tab) {
		t.Helper()
		click(tabs[0], "#hangup-btn")
		for _, tab := range tabs {
			tab.WaitFor(`window.app.state === 'idle' && window.app.pc === null && window.__tracks.every(t => t.readyState === 'ended')`, 10*time.Second)
		}
	}

	// Carol accepts without permission: receive-only, told how to fix it.
	click(erin, `#users [data-name="carol"]`)
	carol.WaitFor(`!document.getElementById('incoming').hidden`, 10*time.Second)
	click(carol, "#accept-btn")
	carol.WaitFor(`window.app.state === 'connected'`, 10*time.Second)
	waitDecoding(t, carol, 30)
	if m := text(carol, "error-text"); !strings.Contains(m, "address bar") || !strings.Contains(m, "Allow") {
		t.Errorf("carol's message does not say how to allow the camera: %q", m)
	}
	erin.WaitFor(`document.getElementById('remote-placeholder').textContent === "carol's camera is off"`, 10*time.Second)
	if mode := evalJS[string](carol, `window.app.mediaMode`); mode != "none" {
		t.Errorf("carol's media mode %q, want none", mode)
	}
	noUndefined(t, carol, "carol")
	hangUp(erin, carol)

	// Carol calls out receive-only.
	autoAccept(erin)
	click(carol, `#users [data-name="erin"]`)
	carol.WaitFor(`window.app.state === 'connected'`, 15*time.Second)
	waitDecoding(t, carol, 30)
	hangUp(carol, erin)

	// Dave has no camera: sound only, both ways.
	click(dave, `#users [data-name="erin"]`)
	erin.WaitFor(`!document.getElementById('incoming').hidden`, 10*time.Second)
	click(erin, "#accept-btn")
	waitDecoding(t, dave, 30)
	erin.WaitFor(`document.getElementById('remote-placeholder').textContent === "dave's camera is off"`, 10*time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for stats(erin).AudioPackets < 50 {
		if time.Now().After(deadline) {
			t.Fatalf("erin hears nothing from dave: %+v", stats(erin))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if mode := evalJS[string](dave, `window.app.mediaMode`); mode != "audio" {
		t.Errorf("dave's media mode %q, want audio", mode)
	}
	if m := text(dave, "error-text"); m != "No camera found, so you take part with sound only." {
		t.Errorf("dave's message %q", m)
	}
	if d := evalJS[bool](dave, `document.getElementById('camera-btn').disabled`); !d {
		t.Error("dave's camera button is enabled without a camera")
	}
	hangUp(dave, erin)

	// Fred's page is plain http on a name that is not localhost: the browser
	// offers no navigator.mediaDevices at all. He still takes a call,
	// receive-only, and is told why.
	insecure := browsertest.Launch(t, chromedp.Flag("host-resolver-rules", "MAP videochat.test 127.0.0.1"))
	fred := signIn(t, insecure, insecureURL(app.URL()), "fred")
	if s := evalJS[string](fred, `location.href + " " + window.isSecureContext + " " + !!navigator.mediaDevices`); !strings.Contains(s, "false false") {
		t.Fatalf("fred's page %s is a secure context; the test needs an insecure one", s)
	}
	erin.WaitFor(`document.querySelector('#users [data-name="fred"]')`, 10*time.Second)
	click(erin, `#users [data-name="fred"]`)
	fred.WaitFor(`!document.getElementById('incoming').hidden`, 10*time.Second)
	click(fred, "#accept-btn")
	waitDecoding(t, fred, 30)
	if m := text(fred, "error-text"); !strings.Contains(m, "https") {
		t.Errorf("fred's message does not mention https: %q", m)
	}
	noUndefined(t, fred, "fred")
	click(fred, "#hangup-btn")
	erin.WaitFor(`window.app.state === 'idle'`, 10*time.Second)
	for name, tab := range map[string]*browsertest.Tab{"carol": carol, "dave": dave, "erin": erin} {
		if n := evalJS[int](tab, `window.__maxLiveCams`); n > 1 {
			t.Errorf("%s: %d camera streams live at once", name, n)
		}
	}
}

// signInTab signs in on an open tab.
func signInTab(t *testing.T, tab *browsertest.Tab, name string) *browsertest.Tab {
	t.Helper()
	tab.Run(chromedp.SendKeys("#name-input", name, chromedp.ByID), chromedp.KeyEvent("\r"))
	tab.WaitFor(`window.app.state === 'idle'`, 10*time.Second)
	return tab
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// insecureURL names the server videochat.test (mapped to 127.0.0.1 by the
// browser's host-resolver-rules): plain http on a name other than
// localhost is not a secure context.
func insecureURL(u string) string {
	for _, h := range []string{"localhost", "127.0.0.1"} {
		u = strings.Replace(u, "//"+h+":", "//videochat.test:", 1)
	}
	return u
}
