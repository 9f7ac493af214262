package signaling

import "net/netip"

// handle runs one client frame. It is called on the client's reader.
func (s *Server) handle(c *client, data []byte) {
	m, err := parseMessage(data)
	if err != nil {
		s.count.msgIn("other")
		s.count.err(ErrBadMessage)
		c.sendError(err.Error())
		return
	}
	s.count.msgIn(m.Type)
	switch m.Type {
	case typePing:
		c.sendMsg(&Message{Type: typePong})
	case typeLogin:
		s.login(c, m.Name, m.Token)
	case typeResume:
		s.resume(c, m.Session)
	default:
		s.handleSession(c, m, data)
	}
}

// handleSession runs a frame that needs a session: the call messages.
func (s *Server) handleSession(c *client, m *Message, data []byte) {
	s.mu.Lock()
	ss := c.sess
	s.mu.Unlock()
	if ss == nil {
		s.count.err(ErrNotLoggedIn)
		c.sendError("log in first: send {\"type\":\"login\",\"name\":...}")
		return
	}
	if s.forwardAway(ss, data) { // its session lives on another node (roam.go)
		return
	}
	s.runSession(ss, c.ip, m, data)
}

// runSession runs a call message of the user of ss, from a connection of
// this node or relayed from the node holding the user's connection
// (roam.go).
func (s *Server) runSession(ss *session, ip netip.Addr, m *Message, data []byte) {
	if s.relayClient(ss, m, data) { // its call is hosted on another node (relay.go)
		return
	}
	switch m.Type {
	case typeOffer:
		if s.sdpOK(ss, m.Type, m.Offer.SDP) {
			s.offer(ss, ip, m.Name, m.Offer.SDP)
		}
	case typeAnswer:
		if s.sdpOK(ss, m.Type, m.Answer.SDP) {
			s.answer(ss, m.Answer.SDP)
		}
	case typeCandidate:
		s.candidate(ss, m)
	case typeLeave:
		s.leave(ss)
	case typeMute:
		s.relayMute(ss, m)
	}
}

// sdpOK checks a description's size and sections (limits.go), telling the
// user when it is refused.
func (s *Server) sdpOK(ss *session, typ, sdp string) bool {
	msg := s.checkSDP(typ, sdp)
	if msg == "" {
		return true
	}
	s.count.err(ErrBadSDP)
	ss.sendError(msg)
	return false
}
