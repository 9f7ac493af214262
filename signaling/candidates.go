package signaling

import (
	"fmt"

	"github.com/pion/webrtc/v4"
)

// maxEarlyCandidates bounds the candidates a client may send before its offer.
const maxEarlyCandidates = 64

func (s *Server) candidate(c *session, m *Message) {
	cand := webrtc.ICECandidateInit{}
	if m.Candidate != nil {
		cand = *m.Candidate
	}
	peer, tell := s.takeCandidate(c, cand)
	if tell != "" {
		s.count.err(ErrCandidates)
		c.sendError(tell)
	}
	if peer == nil {
		return
	}
	if err := peer.AddCandidate(cand); err != nil {
		s.count.err(ErrMedia)
		c.sendError("could not add your candidate: " + err.Error())
	}
}

// takeCandidate counts cand against c's cap for its call and returns the
// peer to give it to, or keeps it until the call's PeerConnection exists.
// tell is an error for the client (once per call or set-up). The lock is
// released by defer: this runs for every candidate a client sends.
func (s *Server) takeCandidate(c *session, cand webrtc.ICECandidateInit) (peer Peer, tell string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl := c.call; cl != nil {
		if cl.cands[c] >= s.cfg.MaxCandidates {
			if cl.capped[c]++; cl.capped[c] == 1 { // once per call: more errors would only fill the queue
				return nil, fmt.Sprintf("too many ICE candidates in this call (at most %d); further candidates are ignored", s.cfg.MaxCandidates)
			}
			return nil, ""
		}
		cl.cands[c]++
		if peer = cl.peers[c]; peer != nil {
			return peer, ""
		}
	}
	if len(c.early) < maxEarlyCandidates {
		c.early = append(c.early, cand)
		return nil, ""
	}
	if c.earlyDropped++; c.earlyDropped == 1 {
		return nil, "too many candidates before an offer"
	}
	return nil, ""
}
