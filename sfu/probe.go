package sfu

import (
	"context"
	"errors"
	"fmt"

	"github.com/pion/webrtc/v4"
)

// Probe checks that a client using only the given ICE servers can reach
// this SFU: it connects a throwaway client PeerConnection to a throwaway
// participant, in process, and waits until the connection (ICE and DTLS) is
// up. With relayOnly the client may use relay candidates only, which tests
// the TURN path end to end (allocation, permission, relay to our port).
func (s *SFU) Probe(ctx context.Context, servers []webrtc.ICEServer, relayOnly bool) error {
	client, err := s.newProbeClient(servers, relayOnly)
	if err != nil {
		return err
	}
	defer func() { _ = client.Close() }()

	sig := &probeSignaler{client: client, failed: make(chan error, 1), queue: make(chan func(), 64)}
	call := s.newCall("probe", true)
	defer call.Close()
	part, err := call.Join("probe", sig)
	if err != nil {
		return err
	}
	connected := make(chan struct{})
	client.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateConnected {
			select {
			case <-connected:
			default:
				close(connected)
			}
		}
	})
	client.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			_ = part.AddCandidate(c.ToJSON())
		}
	})
	// Room for both of the participant's tracks, so no renegotiation follows.
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := client.AddTransceiverFromKind(kind,
			webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			return err
		}
	}
	offer, err := client.CreateOffer(nil)
	if err == nil {
		err = client.SetLocalDescription(offer)
	}
	if err == nil {
		err = part.HandleOffer(offer.SDP)
	}
	if err != nil {
		return fmt.Errorf("probe negotiation: %w", err)
	}
	for {
		select {
		case f := <-sig.queue:
			f()
		case <-connected:
			return nil
		case err := <-sig.failed:
			return err
		case <-ctx.Done():
			return fmt.Errorf("probe: not connected: %w", ctx.Err())
		}
	}
}

func (s *SFU) newProbeClient(servers []webrtc.ICEServer, relayOnly bool) (*webrtc.PeerConnection, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(s.cfg.IncludeLoopback)
	se.SetRelayAcceptanceMinWait(0) // nominate the relay pair at once
	if s.cfg.Net != nil {
		se.SetNet(s.cfg.Net)
	}
	cfg := webrtc.Configuration{ICEServers: servers}
	if relayOnly {
		cfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithSettingEngine(se)).NewPeerConnection(cfg)
}

// probeSignaler hands the SFU's messages to Probe's loop (never blocks).
type probeSignaler struct {
	client *webrtc.PeerConnection
	failed chan error
	queue  chan func()
}

func (p *probeSignaler) SendDescription(d webrtc.SessionDescription) {
	p.push(func() {
		if err := p.client.SetRemoteDescription(d); err != nil {
			p.Failed(err)
		}
	})
}

func (p *probeSignaler) SendCandidate(c webrtc.ICECandidateInit) {
	p.push(func() { _ = p.client.AddICECandidate(c) })
}

func (p *probeSignaler) Interrupted() {}
func (p *probeSignaler) Restored()    {}

func (p *probeSignaler) Failed(err error) {
	select {
	case p.failed <- err:
	default:
	}
}

func (p *probeSignaler) push(f func()) {
	select {
	case p.queue <- f:
	default:
		p.Failed(errors.New("probe: signaling queue full"))
	}
}
