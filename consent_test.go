package main

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"videochat/internal/mediatest"
	"videochat/internal/rtctest"
	"videochat/signaling"
)

// rawCallee is a callee that signs in but never answers on its own: it
// declines, or lets the phone ring.
func rawCallee(t *testing.T, app *App, name string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(wsURLOf(app.URL(), "/ws"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	if err := ws.WriteJSON(signaling.Message{Type: "login", Name: name}); err != nil {
		t.Fatal(err)
	}
	rawExpect(t, ws, "login")
	return ws
}

func rawExpect(t *testing.T, ws *websocket.Conn, typ string) signaling.Message {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	for {
		var m signaling.Message
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatalf("waiting for %s: %v", typ, err)
		}
		if m.Type == typ {
			return m
		}
	}
}

// ringWithMedia has alice call name and stream the sample to the server
// (her PeerConnection connects at once, while the phone rings).
func ringWithMedia(t *testing.T, app *App, s mediatest.Sample, name string) (alice *wsPeer, stop chan struct{}) {
	t.Helper()
	alice = dialPeer(t, wsURLOf(app.URL(), "/ws"), "alice", rtctest.Options{})
	alice.call(name)
	alice.expect("answer")
	waitPCConnected(t, alice)
	stop = make(chan struct{})
	go func() { _ = mediatest.Play(s, alice.Video, alice.Audio, stop) }()
	t.Cleanup(func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
	})
	return alice, stop
}

// waitServerGot waits until the server has received n video packets from name.
func waitServerGot(t *testing.T, app *App, name string, n uint64) {
	t.Helper()
	waitUntil(t, 10*time.Second, func() bool {
		for _, call := range app.sfu.Stats() {
			for _, p := range call {
				for _, u := range p.Up {
					if p.Name == name && u.Kind == "video" && u.Packets >= n {
						return true
					}
				}
			}
		}
		return false
	}, name+"'s media did not reach the server")
}

func assertNoRecording(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		t.Errorf("a call nobody accepted left %s", e.Name())
	}
}

// TestRecordingConsent: with -record-dir, only an accepted call is
// recorded. A call declined after 3 s of ringing while the caller's media
// reached the server, an unanswered call and a call to a busy user leave
// no file at all; an accepted call leaves two.
func TestRecordingConsent(t *testing.T) {
	s := mediatest.Generate(t, 6)

	t.Run("declined", func(t *testing.T) {
		app, dir, _ := recordingApp(t, nil)
		bob := rawCallee(t, app, "bob")
		alice, _ := ringWithMedia(t, app, s, "bob")
		rawExpect(t, bob, "offer")
		waitServerGot(t, app, "alice", 30)
		time.Sleep(3 * time.Second) // the phone rings with alice's media flowing
		if err := bob.WriteJSON(signaling.Message{Type: "leave", Name: "alice"}); err != nil {
			t.Fatal(err)
		}
		if m := alice.expect("leave"); m.Reason != signaling.ReasonDeclined {
			t.Fatalf("leave %+v, want declined", m)
		}
		closeApp(t, app)
		assertNoRecording(t, dir)
	})

	t.Run("unanswered", func(t *testing.T) {
		app, dir, _ := recordingApp(t, func(c *Config) { c.RingTimeout = 2 * time.Second })
		bob := rawCallee(t, app, "bob")
		alice, _ := ringWithMedia(t, app, s, "bob")
		rawExpect(t, bob, "offer")
		waitServerGot(t, app, "alice", 30)
		if m := alice.expect("leave"); m.Reason != signaling.ReasonNoAnswer {
			t.Fatalf("leave %+v, want no answer", m)
		}
		closeApp(t, app)
		assertNoRecording(t, dir)
	})

	t.Run("busy", func(t *testing.T) {
		app, dir, finished := recordingApp(t, nil)
		url := wsURLOf(app.URL(), "/ws")
		carol := dialPeer(t, url, "carol", rtctest.Options{})
		dave := dialPeer(t, url, "dave", rtctest.Options{})
		carol.call("dave")
		carol.expect("accepted")
		played := make(chan struct{})
		go func() { defer close(played); playBoth(t, s, nil, carol, dave) }()
		alice := dialPeer(t, url, "alice", rtctest.Options{})
		alice.call("carol")
		alice.expect("error") // "carol is in another call"
		if m := alice.expect("leave"); m.Reason != signaling.ReasonBusy {
			t.Fatalf("leave %+v, want busy", m)
		}
		// The accepted call (carol and dave) is recorded; alice is not.
		<-played
		carol.send(signalingLeave("dave"))
		dave.expect("leave")
		files := finished(2)
		for _, f := range files {
			if strings.Contains(f, "alice") {
				t.Errorf("the busy caller was recorded: %s", f)
			}
		}
		entries, _ := os.ReadDir(dir)
		if len(entries) != 2 {
			t.Errorf("%d files, want the accepted call's 2", len(entries))
		}
	})

	t.Run("accepted", func(t *testing.T) {
		app, _, finished := recordingApp(t, nil)
		recordedPionCall(t, app, s, nil)
		if files := finished(2); len(files) != 2 {
			t.Fatalf("files %v, want two", files)
		}
	})
}

// closeApp stops the app (finalising any recording) before its files are
// listed.
func closeApp(t *testing.T, app *App) {
	t.Helper()
	if err := app.Close(t.Context()); err != nil {
		t.Log(err)
	}
}
