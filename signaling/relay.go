package signaling

import (
	"context"
	"encoding/json"
	"net/netip"

	"videochat/cluster"
)

// Calls across nodes. A call is hosted on the caller's node (the host):
// both PeerConnections live there, so media never crosses nodes. The
// callee, whose WebSocket is on another node (its home), is represented on
// the host by a proxy session whose frames are relayed to the home node
// instead of written to a connection; the home node passes them to the
// user's real session and relays the user's offers, answers, candidates
// and leave back. The call logic (calls.go) does not know the difference.
//
//	host                               home
//	proxy.sendMsg ──"to"─────────────► session.enqueue (the user's WebSocket)
//	offer/answer/candidate/leave/mute ◄─"from"── handle (the user's frames)
//	showCallstate(proxy) ◄─"state"──── the user's WebSocket lost / back
//	endCall ◄──────────"end"────────── the user's session ended, or busy
//
// A node that goes (stops, dies, or cannot reach Redis for the TTL) ends
// what it shared: the host ends the call ("connection failed"), the home
// node tells its user the call is over.

// Relay message kinds.
const (
	relayTo       = "to"    // host -> home: a frame for the user
	relayFrom     = "from"  // home -> host: a frame from the user
	relayStateMsg = "state" // home -> host: the user's WebSocket is lost (Down) or back
	relayEnd      = "end"   // home -> host: the user cannot take part any more (Reason)
)

// relayMsg is what nodes send each other about a call.
type relayMsg struct {
	Kind   string          `json:"k"`
	Call   string          `json:"c"`           // the call's id on its host
	User   string          `json:"u"`           // the participant whose home is the other node
	Peer   string          `json:"p,omitempty"` // the host's own participant (the caller)
	Frame  json.RawMessage `json:"f,omitempty"`
	Down   bool            `json:"d,omitempty"`
	Reason string          `json:"r,omitempty"`
	Conn   string          `json:"x,omitempty"` // a resumed connection's id on its node (roam.go)
}

// relayBook is the Server's cross-node bookkeeping, guarded by s.mu.
type relayBook struct {
	proxies map[string]*session  // host: call id -> proxy of the remote callee
	bound   map[*session]binding // home: local user -> the remote call it is in
}

type binding struct{ node, call, peer string }

// relayTarget makes a session a proxy: its frames go to node. Guarded by
// the session's mu (push holds it).
type relayTarget struct {
	srv  *Server
	node string
	call string // set when the call exists (adoptProxy); frames before are dropped
}

func (t *relayTarget) send(ss *session, frame []byte) {
	if t.call == "" {
		return
	}
	t.srv.sendRelay(t.node, &relayMsg{Kind: relayTo, Call: t.call, User: ss.name, Frame: frame})
}

func (s *Server) sendRelay(node string, m *relayMsg) {
	b, err := json.Marshal(m)
	if err == nil {
		err = s.cfg.Cluster.Send(node, b)
	}
	if err != nil {
		s.log.Warn("cluster: relay", "node", node, "kind", m.Kind, "user", m.User, "err", err)
	}
}

// locateRemote finds name on another node for a call from c. It returns a
// proxy session to call, or a problem for the caller; neither when name
// is not elsewhere (the local rules apply).
func (s *Server) locateRemote(c *session, name string) (*session, string) {
	if !s.clustered() {
		return nil, ""
	}
	s.mu.Lock()
	local := c.call != nil || s.names[name] != nil
	s.mu.Unlock()
	if local {
		return nil, ""
	}
	node, err := s.cfg.Cluster.Locate(context.Background(), "n:"+name)
	switch {
	case err != nil:
		return nil, "cannot call " + name + " now: " + cluster.ErrUnavailable.Error()
	case node == "" || node == s.cfg.Cluster.ID():
		return nil, ""
	}
	proxy := newSession(name, nil, &s.clock)
	proxy.relay = &relayTarget{srv: s, node: node}
	return proxy, ""
}

// adoptProxy registers cl's callee, when it is a proxy; s.mu held.
func (s *Server) adoptProxy(cl *call) {
	p := cl.callee
	if p.relay == nil {
		return
	}
	if s.relay.proxies == nil {
		s.relay.proxies = map[string]*session{}
	}
	s.relay.proxies[cl.id] = p
	p.mu.Lock()
	p.relay.call = cl.id
	p.mu.Unlock()
}

// forgetRelayed drops cl's proxy, if it had one.
func (s *Server) forgetRelayed(cl *call) {
	if cl.callee.relay == nil {
		return
	}
	s.mu.Lock()
	if s.relay.proxies[cl.id] == cl.callee {
		delete(s.relay.proxies, cl.id)
	}
	s.mu.Unlock()
}

// busyElsewhere reports whether ss is in a call hosted on another node; s.mu held.
func (s *Server) busyElsewhere(ss *session) bool {
	_, ok := s.relay.bound[ss]
	return ok
}

// relayClient passes a frame of a user whose call is hosted elsewhere to
// the host, and reports whether it did.
func (s *Server) relayClient(ss *session, m *Message, data []byte) bool {
	switch m.Type {
	case typeOffer, typeAnswer, typeCandidate, typeLeave, typeMute:
	default:
		return false
	}
	s.mu.Lock()
	b, ok := s.relay.bound[ss]
	if ok && m.Type == typeLeave {
		delete(s.relay.bound, ss) // free for the next call at once
	}
	s.mu.Unlock()
	if !ok {
		return false
	}
	s.sendRelay(b.node, &relayMsg{Kind: relayFrom, Call: b.call, User: ss.name, Frame: data})
	return true
}

// relayCallstate tells the host whether ss's WebSocket is attached.
func (s *Server) relayCallstate(ss *session) {
	s.mu.Lock()
	b, ok := s.relay.bound[ss]
	s.mu.Unlock()
	if ok {
		s.sendRelay(b.node, &relayMsg{Kind: relayStateMsg, Call: b.call, User: ss.name, Down: ss.current() == stateDetached})
	}
}

// relayPeer is the other participant of ss's remote call, ""; s.mu held.
func (s *Server) relayPeer(ss *session) string { return s.relay.bound[ss].peer }

// endRelayed tells the host that ss, whose session ended, has left.
func (s *Server) endRelayed(ss *session, reason string) {
	s.mu.Lock()
	b, ok := s.relay.bound[ss]
	delete(s.relay.bound, ss)
	if s.closed {
		reason = ReasonShutdown
	}
	s.mu.Unlock()
	if ok {
		s.sendRelay(b.node, &relayMsg{Kind: relayEnd, Call: b.call, User: ss.name, Reason: reason})
	}
}

// enter counts a delivery as server work; false once the server is closed.
func (s *Server) enter() bool { return s.addWork(1) }

// deliver handles a message from node, on the cluster's receiving
// goroutine (so a call's messages are handled in the order sent).
func (s *Server) deliver(from string, payload []byte) {
	if !s.enter() {
		return
	}
	defer s.wg.Done()
	defer func() { recovered(s.log, recover(), "relay") }()
	var m relayMsg
	if err := json.Unmarshal(payload, &m); err != nil {
		s.log.Warn("cluster: bad relay message", "from", from, "err", err)
		return
	}
	if s.deliverRoam(from, &m) {
		return
	}
	switch m.Kind {
	case relayTo:
		s.deliverTo(from, &m)
	case relayFrom, relayStateMsg, relayEnd:
		s.deliverHost(from, &m)
	}
}

func frameType(frame []byte) string {
	var probe struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(frame, &probe)
	return probe.Type
}

// deliverTo (home) passes a host's frame to the user it is for.
func (s *Server) deliverTo(from string, m *relayMsg) {
	typ := frameType(m.Frame)
	s.mu.Lock()
	ss := s.names[m.User]
	var reply string
	deliver := false
	if ss != nil {
		b, bound := s.relay.bound[ss]
		switch {
		case bound && b.node == from && b.call == m.Call:
			deliver = true
		case !bound && ss.call == nil && typ == typeOffer:
			if s.relay.bound == nil {
				s.relay.bound = map[*session]binding{}
			}
			s.relay.bound[ss] = binding{node: from, call: m.Call, peer: frameName(m.Frame)}
			deliver = true
		case typ == typeOffer:
			reply = ReasonBusy
		}
		if deliver && typ == typeLeave {
			delete(s.relay.bound, ss)
		}
	} else if typ != typeLeave {
		reply = ReasonGone
	}
	s.mu.Unlock()
	if deliver {
		ss.enqueue(m.Frame)
	}
	if reply != "" {
		s.sendRelay(from, &relayMsg{Kind: relayEnd, Call: m.Call, User: m.User, Reason: reply})
	}
}

func frameName(frame []byte) string {
	var probe struct {
		Name string `json:"name"`
	}
	_ = json.Unmarshal(frame, &probe)
	return probe.Name
}

// deliverHost (host) applies what the remote participant did.
func (s *Server) deliverHost(from string, m *relayMsg) {
	s.mu.Lock()
	p := s.relay.proxies[m.Call]
	var cl *call
	if p != nil && p.name == m.User && p.relay.node == from {
		cl = p.call
	}
	s.mu.Unlock()
	if cl == nil {
		if m.Kind == relayFrom && frameType(m.Frame) != typeLeave {
			// The call is over here: make sure the home node knows.
			leave, _ := json.Marshal(&Message{Type: typeLeave, Reason: ReasonFailed})
			s.sendRelay(from, &relayMsg{Kind: relayTo, Call: m.Call, User: m.User, Frame: leave})
		}
		return
	}
	switch m.Kind {
	case relayStateMsg:
		p.mu.Lock()
		if m.Down {
			p.state = stateDetached
		} else {
			p.state = stateAttached
		}
		p.mu.Unlock()
		s.showCallstate(p)
	case relayEnd:
		if m.Reason == ReasonBusy {
			cl.caller.sendError(p.name + " is in another call")
		}
		s.endCall(cl, m.Reason, cl.caller)
	case relayFrom:
		s.applyRemote(p, m.Frame)
	}
}

// applyRemote runs a remote participant's frame as if it came from a
// connection of this node.
func (s *Server) applyRemote(p *session, frame []byte) {
	msg, err := parseMessage(frame)
	if err != nil {
		p.sendError(err.Error())
		return
	}
	switch msg.Type {
	case typeOffer:
		if e := s.checkSDP(msg.Type, msg.Offer.SDP); e != "" {
			p.sendError(e)
			return
		}
		s.offer(p, netip.Addr{}, msg.Name, msg.Offer.SDP)
	case typeAnswer:
		if e := s.checkSDP(msg.Type, msg.Answer.SDP); e != "" {
			p.sendError(e)
			return
		}
		s.answer(p, msg.Answer.SDP)
	case typeCandidate:
		s.candidate(p, msg)
	case typeLeave:
		s.leave(p)
	case typeMute:
		s.relayMute(p, msg)
	}
}

// nodeDown ends what this node shared with node.
func (s *Server) nodeDown(node string) {
	if !s.enter() {
		return
	}
	defer s.wg.Done()
	s.roamNodeDown(node)
	s.mu.Lock()
	var calls []*call
	for _, p := range s.relay.proxies {
		if p.relay.node == node && p.call != nil {
			calls = append(calls, p.call)
		}
	}
	type lost struct {
		ss   *session
		peer string
	}
	var users []lost
	for ss, b := range s.relay.bound {
		if b.node == node {
			users = append(users, lost{ss, b.peer})
			delete(s.relay.bound, ss)
		}
	}
	s.mu.Unlock()
	for _, cl := range calls {
		s.endCall(cl, ReasonFailed, cl.caller)
	}
	for _, u := range users {
		u.ss.sendMsg(&Message{Type: typeLeave, Name: u.peer, Reason: ReasonFailed})
	}
	if len(calls)+len(users) > 0 {
		s.log.Warn("cluster: node gone, its calls ended", "node", node, "calls", len(calls)+len(users))
	}
}
