package signaling

import (
	"time"

	"github.com/pion/webrtc/v4"
)

// setUp creates the call's media and both PeerConnections: the caller's
// offer is answered at once and the callee gets the server's offer, so
// both legs connect in parallel while the callee decides.
func (s *Server) setUp(cl *call, sdp string, early []webrtc.ICECandidateInit) {
	media, ok := s.attachMedia(cl)
	if !ok {
		return
	}
	pa, pb, ok := s.join(cl, media)
	if !ok {
		return
	}
	for _, cand := range early {
		_ = pa.AddCandidate(cand)
	}
	if err := pa.HandleOffer(sdp); err != nil {
		s.abort(cl, "could not apply your offer: "+err.Error())
		return
	}
	s.mu.Lock()
	cl.offered = true
	s.mu.Unlock()
	if err := pb.SendOffer(); err != nil {
		s.abort(cl, "could not reach "+cl.callee.name+": "+err.Error())
		return
	}
	s.startRinging(cl)
}

// attachMedia creates cl's media session. It is created here, not where
// the call is decided, because that calls out to the SFU, which is never
// done under s.mu. A call that ended meanwhile keeps none.
func (s *Server) attachMedia(cl *call) (MediaCall, bool) {
	media := s.cfg.Media.NewCall(cl.id)
	s.mu.Lock()
	ended := cl.ended
	if !ended {
		cl.media = media
	}
	s.mu.Unlock()
	if ended {
		media.Close()
		return nil, false
	}
	return media, true
}

// join creates the caller's and the callee's PeerConnections.
func (s *Server) join(cl *call, media MediaCall) (pa, pb Peer, ok bool) {
	caller, callee := cl.caller, cl.callee
	pa, err := media.Join(caller.name, &peerSignal{srv: s, call: cl, c: caller, other: callee.name})
	if err == nil {
		pb, err = media.Join(callee.name, &peerSignal{srv: s, call: cl, c: callee, other: caller.name})
	}
	if err != nil {
		s.abort(cl, "could not start the call: "+err.Error())
		return nil, nil, false
	}
	s.mu.Lock()
	ended := cl.ended
	if !ended {
		cl.peers[caller], cl.peers[callee] = pa, pb
	}
	s.mu.Unlock()
	if ended {
		media.Close()
		return nil, nil, false
	}
	return pa, pb, true
}

func (s *Server) startRinging(cl *call) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl.ended || cl.accepted {
		return
	}
	cl.timer = time.AfterFunc(cl.ring, func() {
		s.async(func() {
			s.rememberDecline(cl)
			s.endCall(cl, ReasonNoAnswer, cl.caller, cl.callee)
		})
	})
}

// abort ends a call that failed during setup: the caller gets the error;
// the callee hears of it only if it was already ringing.
func (s *Server) abort(cl *call, msg string) {
	s.count.err(ErrMedia)
	cl.log.Warn("call setup failed", "err", msg)
	cl.caller.sendError(msg)
	s.mu.Lock()
	offered := cl.offered
	s.mu.Unlock()
	if offered {
		s.endCall(cl, ReasonFailed, cl.callee)
	} else {
		s.endCall(cl, ReasonFailed)
	}
}

// answer applies the client's answer to the server's offer.
func (s *Server) answer(c *session, sdp string) {
	cl, peer := s.peerOf(c)
	if peer == nil {
		s.count.err(ErrProtocol)
		c.sendError("there is no call to answer")
		return
	}
	if err := peer.HandleAnswer(sdp); err != nil {
		s.count.err(ErrMedia)
		c.sendError("could not apply your answer: " + err.Error())
		return
	}
	if media := s.accept(cl, c); media != nil {
		cl.log.Info("call accepted", "callee", c.name)
		cl.caller.sendMsg(&Message{Type: typeAccepted, Name: c.name, Recording: s.cfg.Recording})
		s.startRecording(cl, media)
	}
}

// peerOf returns c's call and its PeerConnection in it (nil if none yet).
func (s *Server) peerOf(c *session) (*call, Peer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.call == nil {
		return nil, nil
	}
	return c.call, c.call.peers[c]
}

// accept marks cl accepted when c is its callee answering for the first
// time, and then returns its media (which exists: c has a PeerConnection).
func (s *Server) accept(cl *call, c *session) MediaCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c != cl.callee || cl.accepted || cl.ended {
		return nil
	}
	cl.accepted = true
	if cl.timer != nil {
		cl.timer.Stop()
	}
	return cl.media
}

// startRecording begins recording once both people are in the call (the
// callee accepted), never while it rings: a declined, unanswered or busy
// call leaves nothing on disk. Both are told it has started.
func (s *Server) startRecording(cl *call, media MediaCall) {
	if !s.cfg.Recording {
		return
	}
	media.StartRecording()
	for _, c := range []*session{cl.caller, cl.callee} {
		c.sendMsg(&Message{Type: typeRecording, Recording: true})
	}
}
