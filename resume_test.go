package main

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
	"videochat/signaling"
)

// dropSignaling cuts p's WebSocket TCP connection without a close frame
// (a network change) and waits until its reader has ended. The
// PeerConnection is untouched.
func (p *wsPeer) dropSignaling() {
	_ = p.ws.UnderlyingConn().Close()
	<-p.done
}

// resumeOn dials a new WebSocket and sends resume with token as its first
// message. On success p carries on over the new connection (its reader
// restarts) and the reply is returned; on failure the reply is returned
// and the new connection is closed.
func (p *wsPeer) resumeOn(wsURL, token string) signaling.Message {
	p.t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := ws.WriteJSON(signaling.Message{Type: "resume", Session: token}); err != nil {
		p.t.Fatal(err)
	}
	var reply signaling.Message
	_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	if err := ws.ReadJSON(&reply); err != nil {
		p.t.Fatalf("%s: resume reply: %v", p.name, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	if reply.Success == nil || !*reply.Success {
		_ = ws.Close()
		return reply
	}
	p.wmu.Lock()
	p.ws = ws
	p.wmu.Unlock()
	p.session = reply.Session
	p.msgs, p.done = make(chan signaling.Message, 64), make(chan struct{})
	go p.readLoop()
	return reply
}

// maxGap estimates the longest time between consecutive first arrivals of
// video packets in [from, to), in steps of w.
func maxGap(s *rtctest.SeqTracker, from, to time.Time, w time.Duration) time.Duration {
	run, longest := 0, 0
	for _, n := range s.Arrivals(from, to, w) {
		if n == 0 {
			run++
			longest = max(longest, run)
		} else {
			run = 0
		}
	}
	return time.Duration(longest+1) * w // the gap is below (longest+2)*w
}

func TestResumeMidCallKeepsMediaFlowing(t *testing.T) {
	app := startApp(t, nil)
	url := wsURLOf(app.URL(), "/ws")
	alice, bob := establish(t, app, rtctest.Options{})
	seqs := bob.TrackSequences() // before any media arrives
	defer alice.StartMedia(rtctest.VideoRate{FPS: 30, PacketsPerFrame: 2, Size: 500})()
	defer bob.StartSending()()
	if err := bob.WaitPackets(webrtc.RTPCodecTypeVideo, 30, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := alice.WaitPackets(webrtc.RTPCodecTypeVideo, 30, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	from := time.Now()
	token := alice.session

	alice.dropSignaling()
	if m := bob.expect("callstate"); m.Name != "alice" || m.State != "reconnecting" {
		t.Fatalf("bob: %+v", m)
	}
	// Media goes on while alice's signaling is away.
	n := bob.Received(webrtc.RTPCodecTypeVideo).Packets
	if err := bob.WaitPackets(webrtc.RTPCodecTypeVideo, n+30, 10*time.Second); err != nil {
		t.Fatalf("media while detached: %v", err)
	}

	m := alice.resumeOn(url, token)
	if !*m.Success || m.Name != "alice" || m.Call != "bob" || m.Session == "" || m.Session == token {
		t.Fatalf("resume reply %+v", m)
	}
	if len(m.ICEServers) != len(alice.ice) { // freshly issued, the same kind as at login
		t.Fatalf("resume reply iceServers %+v, login gave %+v", m.ICEServers, alice.ice)
	}
	if m := bob.expect("callstate"); m.Name != "alice" || m.State != "connected" {
		t.Fatalf("bob: %+v", m)
	}
	n = bob.Received(webrtc.RTPCodecTypeVideo).Packets
	if err := bob.WaitPackets(webrtc.RTPCodecTypeVideo, n+30, 10*time.Second); err != nil {
		t.Fatalf("media after resume: %v", err)
	}
	na := alice.Received(webrtc.RTPCodecTypeVideo).Packets
	if err := alice.WaitPackets(webrtc.RTPCodecTypeVideo, na+30, 10*time.Second); err != nil {
		t.Fatalf("media to alice after resume: %v", err)
	}
	to := time.Now()
	gap := maxGap(seqs, from, to, 5*time.Millisecond)
	r := seqs.Report(to, time.Now())
	t.Logf("callee video: longest gap %v in the %v around the drop and resume; since the start %d of %d received, %d corrupt",
		gap, to.Sub(from).Round(time.Millisecond), r.Received, r.Expected, r.Corrupt)
	if gap > 200*time.Millisecond {
		t.Errorf("media stalled for %v at the callee", gap)
	}

	// The resumed session is the same user in the same call.
	alice.send(signalingLeave("bob"))
	if m := bob.expect("leave"); m.Reason != "hangup" || m.Name != "alice" {
		t.Fatalf("leave %+v", m)
	}
}

func TestResumeRefusesWrongAndUsedTokens(t *testing.T) {
	app := startApp(t, nil)
	url := wsURLOf(app.URL(), "/ws")
	alice := dialPeer(t, url, "alice", rtctest.Options{})
	if len(alice.session) < 22 {
		t.Fatalf("login reply token %q", alice.session)
	}
	token := alice.session

	probe := func(tok string) signaling.Message {
		ws, _, err := websocket.DefaultDialer.Dial(url, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		if err := ws.WriteJSON(signaling.Message{Type: "resume", Session: tok}); err != nil {
			t.Fatal(err)
		}
		var m signaling.Message
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		// The connection stays usable: it may log in afresh.
		if err := ws.WriteJSON(signaling.Message{Type: "ping"}); err != nil {
			t.Fatal(err)
		}
		var pong signaling.Message
		if err := ws.ReadJSON(&pong); err != nil || pong.Type != "pong" {
			t.Fatalf("after resume: %+v %v", pong, err)
		}
		return m
	}
	refused := func(m signaling.Message) {
		t.Helper()
		if m.Type != "resume" || m.Success == nil || *m.Success || m.Message == "" {
			t.Fatalf("got %+v, want a refused resume", m)
		}
	}

	refused(probe("wrong"))
	refused(probe(token + "x"))
	alice.dropSignaling()
	if m := alice.resumeOn(url, token); !*m.Success {
		t.Fatalf("resume %+v", m)
	}
	refused(probe(token)) // spent
	// The new token works, once.
	alice.dropSignaling()
	if m := alice.resumeOn(url, alice.session); !*m.Success {
		t.Fatalf("second resume %+v", m)
	}
}
