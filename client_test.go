package main

import (
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

// wsPeer is a pion client speaking the real signaling protocol.
type wsPeer struct {
	t    *testing.T
	name string
	ws   *websocket.Conn
	wmu  sync.Mutex
	*rtctest.Peer
	ice  []signaling.ICEServer
	msgs chan signaling.Message // everything but SDP/candidates, for the test
	done chan struct{}
	// remote holds candidates that arrived before the description.
	mu      sync.Mutex
	pending []webrtc.ICECandidateInit

	session string // resume token of the login (or latest resume) reply

	// sdpOff: descriptions and candidates are passed to msgs untouched
	// (the PeerConnection is gone; the test drives the protocol itself).
	sdpOff atomic.Bool
}

// dialPeer connects to the app at wsURL and logs in as name.
// ICE servers, if given, replace the ones from the login reply.
func dialPeer(t *testing.T, wsURL, name string, opts rtctest.Options, servers ...webrtc.ICEServer) *wsPeer {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	p := &wsPeer{t: t, name: name, ws: ws, msgs: make(chan signaling.Message, 64), done: make(chan struct{})}
	p.send(signaling.Message{Type: "login", Name: name})
	var reply signaling.Message
	if err := ws.ReadJSON(&reply); err != nil || reply.Type != "login" || reply.Success == nil || !*reply.Success {
		_ = ws.Close() // no cleanup yet: p.close would wait for a reader never started
		t.Fatalf("login %s: %+v %v", name, reply, err)
	}
	p.ice, p.session = reply.ICEServers, reply.Session
	opts.ICEServers = servers
	if opts.ICEServers == nil {
		for _, s := range reply.ICEServers {
			opts.ICEServers = append(opts.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
		}
	}
	p.Peer = rtctest.NewPeer(t, opts)
	t.Cleanup(p.close)
	p.PC.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			init := c.ToJSON()
			p.send(signaling.Message{Type: "candidate", Candidate: &init})
		}
	})
	go p.readLoop()
	return p
}

func (p *wsPeer) close() {
	_ = p.ws.Close()
	<-p.done
	p.Peer.Close()
}

func (p *wsPeer) send(m signaling.Message) {
	p.wmu.Lock()
	defer p.wmu.Unlock()
	_ = p.ws.WriteJSON(m)
}

func (p *wsPeer) readLoop() {
	defer close(p.done)
	defer close(p.msgs)
	for {
		var m signaling.Message
		if err := p.ws.ReadJSON(&m); err != nil {
			return
		}
		if p.sdpOff.Load() {
			select {
			case p.msgs <- m:
			default:
			}
			continue
		}
		switch m.Type {
		case "answer":
			p.setRemote(*m.Answer)
		case "offer":
			p.setRemote(*m.Offer)
			answer, err := p.PC.CreateAnswer(nil)
			if err == nil {
				err = p.PC.SetLocalDescription(answer)
			}
			if err != nil {
				p.t.Errorf("%s: answering: %v", p.name, err)
				continue
			}
			p.send(signaling.Message{Type: "answer", Name: m.Name, Answer: &answer})
		case "candidate":
			p.addCandidate(*m.Candidate)
		}
		if m.Type != "candidate" && m.Type != "users" {
			select {
			case p.msgs <- m:
			default:
			}
		}
	}
}

func (p *wsPeer) setRemote(d webrtc.SessionDescription) {
	if err := p.PC.SetRemoteDescription(d); err != nil {
		p.t.Errorf("%s: remote %s: %v", p.name, d.Type, err)
		return
	}
	p.mu.Lock()
	pending := p.pending
	p.pending = nil
	p.mu.Unlock()
	for _, c := range pending {
		p.addCandidate(c)
	}
}

func (p *wsPeer) addCandidate(c webrtc.ICECandidateInit) {
	p.mu.Lock()
	if p.PC.RemoteDescription() == nil {
		p.pending = append(p.pending, c)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	if err := p.PC.AddICECandidate(c); err != nil {
		p.t.Errorf("%s: candidate %q: %v", p.name, c.Candidate, err)
	}
}

// call offers a call to name.
func (p *wsPeer) call(name string) {
	p.t.Helper()
	offer, err := p.PC.CreateOffer(nil)
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.PC.SetLocalDescription(offer); err != nil {
		p.t.Fatal(err)
	}
	p.send(signaling.Message{Type: "offer", Name: name, Offer: &offer})
}

// expect waits for the next message of type typ, skipping SDP echoes.
func (p *wsPeer) expect(typ string) signaling.Message {
	p.t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-p.msgs:
			if !ok {
				p.t.Fatalf("%s: connection closed waiting for %s", p.name, typ)
			}
			if m.Type == typ {
				return m
			}
			if m.Type == "error" || m.Type == "leave" {
				p.t.Fatalf("%s: got %+v waiting for %s", p.name, m, typ)
			}
		case <-timeout:
			p.t.Fatalf("%s: no %s within 10 s", p.name, typ)
		}
	}
}

func wsURLOf(httpURL, path string) string {
	return "ws" + strings.TrimPrefix(strings.TrimSuffix(httpURL, "/"), "http") + path
}

func signalingLeave(name string) signaling.Message {
	return signaling.Message{Type: "leave", Name: name}
}
func signalingMsg(typ string) signaling.Message { return signaling.Message{Type: typ} }
