package sfu

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
)

// Echo limits: a diagnostic PeerConnection lives at most echoLifetime, and
// at most maxEchoes exist at once.
const (
	echoLifetime   = 30 * time.Second
	maxEchoes      = 32
	echoGatherWait = 5 * time.Second
)

// ErrTooManyEchoes is returned by Echo when maxEchoes are running.
var ErrTooManyEchoes = errors.New("sfu: too many diagnostic connections, try again shortly")

// echoes tracks the diagnostic PeerConnections of an SFU.
type echoes struct {
	mu     sync.Mutex
	pcs    map[*webrtc.PeerConnection]struct{}
	closed bool
	wg     sync.WaitGroup // closing goroutines
}

// Echo answers a client's offer with a diagnostic PeerConnection that uses
// the SFU's own media sockets (UDP and ICE-TCP): every message on any data
// channel the client opens is sent back at once, so the client can tell
// which transports reach the SFU and measure their round trip. The answer
// carries all candidates (no trickle). The connection closes after 30 s,
// when the client leaves, or on Close; at most 32 exist at once.
func (s *SFU) Echo(ctx context.Context, offer webrtc.SessionDescription) (webrtc.SessionDescription, error) {
	if err := checkCodecWork("offer", offer.SDP); err != nil { // anyone may post one
		return webrtc.SessionDescription{}, fmt.Errorf("sfu: echo: %w", err)
	}
	pc, err := s.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return webrtc.SessionDescription{}, err
	}
	if !s.echo.add(pc) {
		_ = pc.Close()
		return webrtc.SessionDescription{}, ErrTooManyEchoes
	}
	closePC := func() { s.echo.close(pc) }
	timer := time.AfterFunc(echoLifetime, closePC)
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateFailed || st == webrtc.PeerConnectionStateClosed {
			timer.Stop()
			closePC()
		}
	})
	pc.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnMessage(func(m webrtc.DataChannelMessage) {
			if m.IsString {
				_ = dc.SendText(string(m.Data))
			} else {
				_ = dc.Send(m.Data)
			}
		})
	})
	answer, err := s.answerEcho(ctx, pc, offer)
	if err != nil {
		timer.Stop()
		closePC()
		return webrtc.SessionDescription{}, err
	}
	return answer, nil
}

func (s *SFU) answerEcho(ctx context.Context, pc *webrtc.PeerConnection, offer webrtc.SessionDescription) (webrtc.SessionDescription, error) {
	if offer.Type != webrtc.SDPTypeOffer {
		return webrtc.SessionDescription{}, errors.New("sfu: echo needs an offer")
	}
	if err := pc.SetRemoteDescription(offer); err != nil {
		return webrtc.SessionDescription{}, fmt.Errorf("sfu: echo offer: %w", err)
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return webrtc.SessionDescription{}, err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return webrtc.SessionDescription{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, echoGatherWait)
	defer cancel()
	select {
	case <-gathered:
	case <-ctx.Done():
		return webrtc.SessionDescription{}, fmt.Errorf("sfu: echo: gathering: %w", ctx.Err())
	}
	return *pc.LocalDescription(), nil
}

func (e *echoes) add(pc *webrtc.PeerConnection) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || len(e.pcs) >= maxEchoes {
		return false
	}
	if e.pcs == nil {
		e.pcs = map[*webrtc.PeerConnection]struct{}{}
	}
	e.pcs[pc] = struct{}{}
	return true
}

// close closes pc once, on a goroutine of its own (it may be called from
// pion's callbacks, which pc.Close waits for).
func (e *echoes) close(pc *webrtc.PeerConnection) {
	e.mu.Lock()
	_, ok := e.pcs[pc]
	delete(e.pcs, pc)
	if ok {
		e.wg.Add(1)
	}
	e.mu.Unlock()
	if ok {
		go func() { defer e.wg.Done(); _ = pc.Close() }()
	}
}

// closeAll closes every echo connection and refuses new ones.
func (e *echoes) closeAll() {
	e.mu.Lock()
	e.closed = true
	pcs := make([]*webrtc.PeerConnection, 0, len(e.pcs))
	for pc := range e.pcs {
		pcs = append(pcs, pc)
	}
	e.pcs = nil
	e.mu.Unlock()
	for _, pc := range pcs {
		_ = pc.Close()
	}
	e.wg.Wait()
}
