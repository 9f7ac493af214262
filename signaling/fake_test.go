package signaling

import (
	"errors"
	"sync"

	"github.com/pion/webrtc/v4"

	"videochat/sfu"
)

// fakeMedia stands in for the SFU: it answers offers with "answer:<name>",
// makes offers "offer:<name>", and emits one candidate after each
// description, so the signaling rules can be tested without WebRTC.
type fakeMedia struct {
	mu    sync.Mutex
	calls []*fakeCall
}

func (m *fakeMedia) NewCall(id string) MediaCall {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := &fakeCall{id: id, peers: map[string]*fakePeer{}}
	m.calls = append(m.calls, c)
	return c
}

func (m *fakeMedia) peer(name string) *fakePeer {
	m.mu.Lock()
	defer m.mu.Unlock()
	for i := len(m.calls) - 1; i >= 0; i-- {
		if p := m.calls[i].get(name); p != nil {
			return p
		}
	}
	return nil
}

type fakeCall struct {
	id        string
	mu        sync.Mutex
	peers     map[string]*fakePeer
	closed    bool
	recording bool
}

func (c *fakeCall) get(name string) *fakePeer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peers[name]
}

func (c *fakeCall) Join(name string, sig sfu.Signaler) (Peer, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, sfu.ErrClosed
	}
	p := &fakePeer{name: name, sig: sig}
	c.peers[name] = p
	return p, nil
}

func (c *fakeCall) StartRecording() {
	c.mu.Lock()
	c.recording = true
	c.mu.Unlock()
}

func (c *fakeCall) Close() {
	c.mu.Lock()
	c.closed = true
	ps := make([]*fakePeer, 0, len(c.peers))
	for _, p := range c.peers {
		ps = append(ps, p)
	}
	c.mu.Unlock()
	for _, p := range ps {
		p.Close()
	}
}

type fakePeer struct {
	name string
	sig  sfu.Signaler

	mu         sync.Mutex
	candidates []webrtc.ICECandidateInit
	answers    []string
	closed     bool
}

func (p *fakePeer) describe(t webrtc.SDPType) {
	p.sig.SendDescription(webrtc.SessionDescription{Type: t, SDP: t.String() + ":" + p.name})
	p.sig.SendCandidate(webrtc.ICECandidateInit{Candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host"})
}

func (p *fakePeer) HandleOffer(sdp string) error {
	if sdp == "bad" {
		return errors.New("unparseable SDP")
	}
	p.describe(webrtc.SDPTypeAnswer)
	return nil
}

func (p *fakePeer) HandleAnswer(sdp string) error {
	if sdp == "bad" {
		return errors.New("unparseable SDP")
	}
	p.mu.Lock()
	p.answers = append(p.answers, sdp)
	p.mu.Unlock()
	return nil
}

func (p *fakePeer) SendOffer() error {
	p.describe(webrtc.SDPTypeOffer)
	return nil
}

func (p *fakePeer) AddCandidate(c webrtc.ICECandidateInit) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.candidates = append(p.candidates, c)
	return nil
}

func (p *fakePeer) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
}

func (p *fakePeer) isClosed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.closed
}

func (p *fakePeer) gotCandidates() []webrtc.ICECandidateInit {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]webrtc.ICECandidateInit(nil), p.candidates...)
}
