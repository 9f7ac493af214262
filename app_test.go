package main

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"videochat/internal/rtctest"
)

func TestMain(m *testing.M) {
	// Pebble's validation authority (acme_test.go) has one task loop that
	// no API stops.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/letsencrypt/pebble/v2/va.VAImpl.processTasks"))
}

// startApp runs the whole server in-process on ephemeral ports.
func startApp(t testing.TB, mod func(*Config)) *App {
	t.Helper()
	cfg := Config{Addr: "127.0.0.1:0", UDPPort: 0, IncludeLoopback: true}
	if mod != nil {
		mod(&cfg)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	app, err := NewApp(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
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

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) { w.t.Log(string(b)); return len(b), nil }

var kinds = []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo}

// establish logs two pion clients in, calls and accepts, and waits until
// media flows both ways.
func establish(t *testing.T, app *App, opts rtctest.Options) (alice, bob *wsPeer) {
	t.Helper()
	url := wsURLOf(app.URL(), "/ws")
	alice = dialPeer(t, url, "alice", opts)
	bob = dialPeer(t, url, "bob", opts)
	alice.call("bob")
	if m := alice.expect("answer"); m.Name != "bob" {
		t.Fatalf("answer names %q", m.Name)
	}
	if m := bob.expect("offer"); m.Name != "alice" {
		t.Fatalf("offer names %q", m.Name)
	}
	alice.expect("accepted")
	return alice, bob
}

func TestCallEndToEnd(t *testing.T) {
	app := startApp(t, nil)
	alice, bob := establish(t, app, rtctest.Options{})
	defer alice.StartSending()()
	defer bob.StartSending()()
	for _, p := range []*wsPeer{alice, bob} {
		for _, k := range kinds {
			if err := p.WaitPackets(k, 100, 10*time.Second); err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			if r := p.Received(k); r.Corrupt != 0 {
				t.Fatalf("%s %s: %d of %d payloads corrupt", p.name, k, r.Corrupt, r.Packets)
			}
		}
	}

	// The server's numbers agree: nothing lost on loopback, media both ways.
	for _, calls := range app.sfu.Stats() {
		for _, ps := range calls {
			if len(ps.Up) != 2 || len(ps.Down) != 2 {
				t.Fatalf("%s: %d up / %d down tracks", ps.Name, len(ps.Up), len(ps.Down))
			}
			for _, u := range ps.Up {
				if u.Packets < 100 || u.Lost != 0 {
					t.Errorf("%s %s: %d packets forwarded, %d lost", ps.Name, u.Kind, u.Packets, u.Lost)
				}
			}
		}
	}

	// A PLI from the receiver reaches the sender.
	before := alice.KeyframeRequests()
	if err := bob.SendPLI(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 2*time.Second, func() bool { return alice.KeyframeRequests() > before }, "PLI did not reach the publisher")

	// Hang-up: bob is told, and media stops.
	alice.send(signalingLeave("bob"))
	if m := bob.expect("leave"); m.Reason != "hangup" || m.Name != "alice" {
		t.Fatalf("leave %+v", m)
	}
	assertForwardingStops(t, bob)
}

func TestAbruptDisconnectEndsCall(t *testing.T) {
	app := startApp(t, nil)
	alice, bob := establish(t, app, rtctest.Options{})
	defer bob.StartSending()()
	if err := alice.WaitPackets(webrtc.RTPCodecTypeVideo, 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// The tab closes: a close frame but no leave; the PeerConnection stays up.
	// (A connection lost without a close frame is held for a resume: see
	// resume_test.go.)
	_ = alice.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
	if m := bob.expect("leave"); m.Reason != "disconnected" {
		t.Fatalf("leave %+v", m)
	}
	assertForwardingStops(t, alice)
}

func TestTutorialClientConnectsAtRoot(t *testing.T) {
	app := startApp(t, nil)
	p := dialPeer(t, wsURLOf(app.URL(), "/"), "tutorial", rtctest.Options{})
	p.send(signalingLeave("")) // harmless outside a call
	p.send(signalingMsg("dance"))
	if m := p.expect("error"); m.Message != "Command not found: dance" {
		t.Fatalf("error %q", m.Message)
	}
}

func TestShutdownTellsCallers(t *testing.T) {
	app := startApp(t, nil)
	alice, bob := establish(t, app, rtctest.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	closed := make(chan error, 1)
	go func() { closed <- app.Close(ctx) }()
	for _, p := range []*wsPeer{alice, bob} {
		if m := p.expect("leave"); m.Reason != "server shutting down" {
			t.Fatalf("%s: leave %+v", p.name, m)
		}
	}
	if err := <-closed; err != nil { // Close is idempotent: the cleanup's call returns this too
		t.Errorf("close: %v", err)
	}
}

// assertForwardingStops checks that p stops receiving media.
func assertForwardingStops(t *testing.T, p *wsPeer) {
	t.Helper()
	time.Sleep(200 * time.Millisecond)
	n := p.Received(webrtc.RTPCodecTypeVideo).Packets
	time.Sleep(400 * time.Millisecond)
	if m := p.Received(webrtc.RTPCodecTypeVideo).Packets; m != n {
		t.Fatalf("%s still receives media after the call ended: %d -> %d", p.name, n, m)
	}
}

func waitUntil(t *testing.T, d time.Duration, cond func() bool, msg string) {
	t.Helper()
	for deadline := time.Now().Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatal(msg)
}

func TestPeerConnectionLossEndsCall(t *testing.T) {
	app := startApp(t, nil)
	alice, bob := establish(t, app, rtctest.Options{})
	defer alice.StartSending()()
	if err := bob.WaitPackets(webrtc.RTPCodecTypeVideo, 10, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	bob.Peer.Close() // the media connection dies; the WebSocket stays
	if m := alice.expect("leave"); m.Reason != "connection failed" || m.Name != "bob" {
		t.Fatalf("leave %+v", m)
	}
	if m := bob.expect("leave"); m.Reason != "connection failed" {
		t.Fatalf("bob: leave %+v", m)
	}
}

func TestAudioOnlyCallerGetsVideoByRenegotiation(t *testing.T) {
	app := startApp(t, nil)
	url := wsURLOf(app.URL(), "/ws")
	alice := dialPeer(t, url, "alice", rtctest.Options{AudioOnly: true})
	bob := dialPeer(t, url, "bob", rtctest.Options{})
	alice.call("bob")
	alice.expect("answer")
	if m := alice.expect("offer"); m.Name != "bob" { // the server adds the video m-line
		t.Fatalf("renegotiation offer names %q", m.Name)
	}
	bob.expect("offer")
	alice.expect("accepted")
	defer bob.StartSending()()
	defer alice.StartSending()()
	if err := alice.WaitPackets(webrtc.RTPCodecTypeVideo, 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := bob.WaitPackets(webrtc.RTPCodecTypeAudio, 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}
