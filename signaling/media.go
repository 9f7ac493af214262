package signaling

import (
	"github.com/pion/webrtc/v4"

	"videochat/sfu"
)

// Media is what signaling needs from the SFU; tests use a fake.
type Media interface {
	NewCall(id string) MediaCall
}

// MediaCall is one call's media session.
type MediaCall interface {
	Join(name string, sig sfu.Signaler) (Peer, error)
	// StartRecording records the call from now on (consent: both are in it).
	StartRecording()
	Close()
}

// Peer is one participant's server-side PeerConnection.
type Peer interface {
	HandleOffer(sdp string) error
	HandleAnswer(sdp string) error
	SendOffer() error
	AddCandidate(c webrtc.ICECandidateInit) error
	Close()
}

// SFUMedia adapts *sfu.SFU to Media.
func SFUMedia(s *sfu.SFU) Media { return sfuMedia{s} }

type sfuMedia struct{ s *sfu.SFU }

func (m sfuMedia) NewCall(id string) MediaCall { return sfuCall{m.s.NewCall(id)} }

type sfuCall struct{ c *sfu.Call }

func (c sfuCall) Join(name string, sig sfu.Signaler) (Peer, error) {
	p, err := c.c.Join(name, sig)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func (c sfuCall) StartRecording() { c.c.StartRecording() }

func (c sfuCall) Close() { c.c.Close() }
