package signaling

import (
	"errors"
	"time"

	"github.com/pion/webrtc/v4"

	"videochat/sfu"
)

// peerSignal carries the SFU's messages for one participant to its client.
type peerSignal struct {
	srv   *Server
	call  *call
	c     *session
	other string
}

func (p *peerSignal) current() bool {
	p.srv.mu.Lock()
	defer p.srv.mu.Unlock()
	return p.c.call == p.call
}

func (p *peerSignal) SendDescription(d webrtc.SessionDescription) {
	if !p.current() {
		return
	}
	m := &Message{Type: d.Type.String(), Name: p.other}
	if d.Type == webrtc.SDPTypeOffer {
		m.Offer = &d
	} else {
		m.Answer = &d
	}
	p.c.sendMsg(m)
}

func (p *peerSignal) SendCandidate(c webrtc.ICECandidateInit) {
	if p.current() {
		p.c.sendMsg(&Message{Type: typeCandidate, Candidate: &c})
	}
}

// Interrupted and Restored: the participant's media connection was lost
// and came back. They only take the lock and enqueue.
func (p *peerSignal) Interrupted() { p.srv.setMediaDown(p.call, p.c, true) }
func (p *peerSignal) Restored()    { p.srv.setMediaDown(p.call, p.c, false) }

func (s *Server) setMediaDown(cl *call, ss *session, down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl.ended || ss.call != cl {
		return
	}
	cl.mediaDown[ss] = down
	s.showCallstateLocked(ss)
}

// showCallstate tells the other participant of ss's call whether ss is
// reachable (its WebSocket attached and its media connected), when that
// differs from what it was told last.
func (s *Server) showCallstate(ss *session) {
	s.relayCallstate(ss) // its call is hosted on another node (relay.go)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.showCallstateLocked(ss)
}

// showCallstateLocked is showCallstate with s.mu held; it only enqueues,
// under the lock, so that states arrive in the order they changed.
func (s *Server) showCallstateLocked(ss *session) {
	cl := ss.call
	if cl == nil || cl.ended {
		return
	}
	down := cl.mediaDown[ss] || ss.current() == stateDetached
	if down == cl.shownDown[ss] {
		return
	}
	cl.shownDown[ss] = down
	state := callConnected
	if down {
		state = callReconnecting
	}
	cl.other(ss).sendMsg(&Message{Type: typeCallstate, Name: ss.name, State: state})
}

// closedLeaveWait: a client that hangs up sends leave, then closes its
// PeerConnection, and the DTLS close can reach the SFU before the leave
// does (across nodes the leave is relayed through Redis, so it often
// does). A PeerConnection the client closed ends the call as failed only
// if no leave came within this time; otherwise the other side hears
// "hangup", as it should.
const closedLeaveWait = time.Second

func (p *peerSignal) Failed(err error) {
	p.call.log.Warn("peer connection failed", "participant", p.c.name, "err", err)
	p.srv.async(func() {
		if errors.Is(err, sfu.ErrPCClosed) {
			t := time.NewTimer(closedLeaveWait)
			<-t.C // bounded; endCall below is a no-op if the leave came
		}
		p.srv.endCall(p.call, ReasonFailed, p.call.caller, p.call.callee)
	})
}
