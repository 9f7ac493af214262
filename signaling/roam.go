package signaling

import (
	"encoding/json"
	"net/netip"
	"strings"
	"time"
)

// Session resume across nodes. A resume token names the node that issued
// it ("<random>.<node id>"; the random part is what proves the session,
// and only that node can check it). When a resumed WebSocket reaches
// another node (the load balancer chose differently), that node (the
// connection's node) asks the session's node over the relay; the session
// stays where it is, with its name, its call and its place in calls
// hosted elsewhere, and takes the connection on the other node as its
// attached connection:
//
//	session's node                       connection's node
//	      ◄──────────"resume" (token)────── resume (unknown token here)
//	attachRemote ──"resumed" (reply)─────► stand-in session, reply + ICE
//	ss.enqueue ────"out"─────────────────► the WebSocket
//	handleSession ◄─"in"──────────────────── the user's frames
//	detachRemote / end ◄─"conn" (lost?)──── the WebSocket lost / closed
//	      ──────────"close"──────────────► resumed elsewhere, or ended
//
// Media is untouched (a call lives on its host whatever the signaling
// path). Users lists come from the connection's node, which knows
// everyone too.

// Relay kinds for resumed connections.
const (
	relayResume  = "resume"  // connection's node -> session's node: Frame is the token
	relayResumed = "resumed" // session's node -> connection's node: Frame is the reply
	relayOut     = "out"     // session's node -> connection's node: a frame for the user
	relayIn      = "in"      // connection's node -> session's node: a frame from the user
	relayConn    = "conn"    // connection's node -> session's node: lost (Down) or closed
	relayClose   = "close"   // session's node -> connection's node: close the connection
)

// remoteResumeWait bounds the wait for the session's node to answer a
// resume; the reply then says the session cannot be resumed.
const remoteResumeWait = 5 * time.Second

// roamBook is the Server's bookkeeping of resumed connections, guarded by s.mu.
type roamBook struct {
	pending map[string]*pendingResume // connection's node: id -> asked
	stubs   map[string]*session       // connection's node: id -> stand-in
	conns   map[string]*session       // session's node: id -> the session
}

type pendingResume struct {
	c     *client
	timer stopper
}

// remoteConn is a session's connection on another node.
type remoteConn struct {
	srv  *Server
	node string
	conn string // its id on that node
}

func (rc *remoteConn) send(frame []byte) {
	rc.srv.sendRelay(rc.node, &relayMsg{Kind: relayOut, Conn: rc.conn, Frame: frame})
}

func (rc *remoteConn) sendResumed(reply []byte) {
	rc.srv.sendRelay(rc.node, &relayMsg{Kind: relayResumed, Conn: rc.conn, Frame: reply})
}

// awayLink is where a stand-in session's real session lives, and the
// stand-in's connection here.
type awayLink struct {
	node, conn string
	c          *client
}

// newToken returns a fresh resume token naming this node.
func (s *Server) newToken() string {
	if !s.clustered() {
		return newToken()
	}
	return newToken() + "." + s.cfg.Cluster.ID()
}

// tokenNode is the other node that issued token, "" if none.
func (s *Server) tokenNode(token string) string {
	if !s.clustered() {
		return ""
	}
	_, node, ok := strings.Cut(token, ".")
	if !ok || node == "" || node == s.cfg.Cluster.ID() || len(token) > 256 || !s.cfg.Cluster.Alive(node) {
		return "" // a dead node's sessions are gone with it
	}
	return node
}

func (ss *session) remoteAttached() bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.remote != nil && ss.state == stateAttached
}

// resumeRemote asks node to resume the session of token on c; the answer
// comes back as a "resumed" relay message (deliverResumed).
func (s *Server) resumeRemote(c *client, token, node string) {
	id := newID()
	p := &pendingResume{c: c}
	s.mu.Lock()
	if s.roam.pending == nil {
		s.roam.pending = map[string]*pendingResume{}
	}
	s.roam.pending[id] = p
	p.timer = s.cfg.afterFunc(remoteResumeWait, func() {
		s.async(func() {
			if s.takePending(id) != nil {
				s.count.err(ErrResumeFailed)
				c.sendMsg(&Message{Type: typeResume, Success: new(false),
					Message: "the server holding this session did not answer; log in again"})
			}
		})
	})
	s.mu.Unlock()
	tok, _ := json.Marshal(token)
	s.sendRelay(node, &relayMsg{Kind: relayResume, Conn: id, Frame: tok})
}

func (s *Server) takePending(id string) *pendingResume {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.roam.pending[id]
	delete(s.roam.pending, id)
	if p != nil && p.timer != nil {
		p.timer.Stop()
	}
	return p
}

// deliverRoam handles the relay messages of resumed connections; false
// for other kinds.
func (s *Server) deliverRoam(from string, m *relayMsg) bool {
	switch m.Kind {
	case relayResume:
		s.remoteResumeRequest(from, m)
	case relayResumed:
		s.deliverResumed(from, m)
	case relayOut:
		s.mu.Lock()
		stub := s.roam.stubs[m.Conn]
		s.mu.Unlock()
		if stub != nil && stub.away.node == from {
			stub.enqueue(m.Frame)
		}
	case relayClose:
		s.mu.Lock()
		stub := s.roam.stubs[m.Conn]
		var c *client
		if stub != nil && stub.away.node == from {
			delete(s.roam.stubs, m.Conn)
			if c = stub.away.c; c.sess == stub {
				c.sess = nil
			}
		}
		s.mu.Unlock()
		if c != nil {
			c.stopWith("session resumed on another connection")
		}
	case relayIn:
		s.mu.Lock()
		ss := s.roam.conns[m.Conn]
		s.mu.Unlock()
		if ss == nil || !ss.remoteIs(m.Conn) {
			return true
		}
		msg, err := parseMessage(m.Frame)
		if err != nil {
			ss.sendError(err.Error())
			return true
		}
		s.runSession(ss, netip.Addr{}, msg, m.Frame)
	case relayConn:
		s.remoteConnGone(m)
	default:
		return false
	}
	return true
}

// remoteResumeRequest (session's node) resumes a session for a connection
// on node from.
func (s *Server) remoteResumeRequest(from string, m *relayMsg) {
	var token string
	_ = json.Unmarshal(m.Frame, &token)
	rc := &remoteConn{srv: s, node: from, conn: m.Conn}
	fail := func() {
		s.count.err(ErrResumeFailed)
		reply, _ := json.Marshal(&Message{Type: typeResume, Success: new(false),
			Message: "this session is unknown, already resumed or expired; log in again"})
		rc.sendResumed(reply)
	}
	s.mu.Lock()
	ss := s.tokens[token]
	if ss == nil || token == "" {
		s.mu.Unlock()
		fail()
		return
	}
	delete(s.tokens, token)
	ss.token = s.newToken()
	s.tokens[ss.token] = ss
	newTok, other := ss.token, ""
	if ss.call != nil {
		other = ss.call.other(ss).name
	} else {
		other = s.relayPeer(ss)
	}
	s.mu.Unlock()
	// The connection's node adds its own ICE servers.
	reply, err := jsonFrame(&Message{Type: typeResume, Success: new(true), Name: ss.name, Session: newTok, Call: other})
	if err != nil {
		return
	}
	s.mu.Lock()
	old, oldRemote, ok := ss.attachRemote(rc, reply)
	if ok {
		if s.roam.conns == nil {
			s.roam.conns = map[string]*session{}
		}
		s.roam.conns[rc.conn] = ss
		if old != nil {
			old.sess = nil
		}
	} else if s.tokens[newTok] == ss {
		delete(s.tokens, newTok)
	}
	s.mu.Unlock()
	if !ok {
		fail()
		return
	}
	if old != nil {
		old.stopWith("session resumed on another connection")
	}
	s.closeRemote(oldRemote)
	s.log.Info("session resumed on another node", "name", ss.name, "node", from)
	s.showCallstate(ss)
}

// deliverResumed (connection's node) completes a resume the session's node
// answered: the connection gets the reply (with this node's ICE servers)
// and then what the session sends.
func (s *Server) deliverResumed(from string, m *relayMsg) {
	var reply Message
	if err := json.Unmarshal(m.Frame, &reply); err != nil || reply.Success == nil {
		return
	}
	p := s.takePending(m.Conn)
	ok := *reply.Success
	if p == nil {
		if ok { // the connection is gone: the session waits for another resume
			s.sendRelay(from, &relayMsg{Kind: relayConn, Conn: m.Conn, Down: true})
		}
		return
	}
	c := p.c
	if !ok {
		s.count.err(ErrResumeFailed)
		c.sendMsg(&reply)
		return
	}
	reply.ICEServers = s.iceServers(reply.Name, c.host)
	frame, err := jsonFrame(&reply)
	if err != nil {
		return
	}
	stub := newSession(reply.Name, c, &s.clock)
	stub.away = &awayLink{node: from, conn: m.Conn, c: c}
	s.mu.Lock()
	_, open := s.clients[c]
	attached := open && c.sess == nil && !s.closed
	if attached {
		c.sess = stub
		c.authed.Store(true)
		if s.roam.stubs == nil {
			s.roam.stubs = map[string]*session{}
		}
		s.roam.stubs[m.Conn] = stub
		s.count.msgOut(typeResume)
		c.enqueue(frame) // under the lock: before any users list
	}
	s.mu.Unlock()
	if !attached {
		s.sendRelay(from, &relayMsg{Kind: relayConn, Conn: m.Conn, Down: true})
		return
	}
	if users := s.currentUsers(); users != nil {
		stub.enqueueUsers(users)
	}
}

// forwardAway sends a frame of a stand-in session's connection to the
// session's node, and reports whether ss is such a stand-in.
func (s *Server) forwardAway(ss *session, data []byte) bool {
	if ss.away == nil {
		return false
	}
	s.sendRelay(ss.away.node, &relayMsg{Kind: relayIn, Conn: ss.away.conn, Frame: data})
	return true
}

// awayLost (connection's node) tells the session's node that the
// connection of stand-in ss ended: lost (the session waits for another
// resume) or closed on purpose (the session ends).
func (s *Server) awayLost(ss *session, c *client, err error) {
	s.mu.Lock()
	mine := s.roam.stubs[ss.away.conn] == ss
	if mine {
		delete(s.roam.stubs, ss.away.conn)
	}
	closing := s.closed
	s.mu.Unlock()
	ss.end(c)
	if !mine {
		return
	}
	// A node shutting down lets its users resume elsewhere.
	down := closing || (lostWithoutClose(err) && !c.killed())
	s.sendRelay(ss.away.node, &relayMsg{Kind: relayConn, Conn: ss.away.conn, Down: down})
}

// remoteConnGone (session's node) applies the loss or close of a session's
// connection on another node.
func (s *Server) remoteConnGone(m *relayMsg) {
	s.mu.Lock()
	ss := s.roam.conns[m.Conn]
	delete(s.roam.conns, m.Conn)
	s.mu.Unlock()
	if ss == nil {
		return
	}
	if m.Down {
		if ss.detachRemote(m.Conn) {
			s.log.Info("connection lost on another node, session held for resume", "name", ss.name)
			s.showCallstate(ss)
		}
		return
	}
	if ss.endIf(nil, m.Conn) {
		ss.takeRemote() // gone already: no close to send
		s.finishSession(ss)
	}
}

// closeRemote tells a replaced or ended session's connection on another
// node to close.
func (s *Server) closeRemote(rc *remoteConn) {
	if rc == nil {
		return
	}
	s.mu.Lock()
	delete(s.roam.conns, rc.conn)
	s.mu.Unlock()
	s.sendRelay(rc.node, &relayMsg{Kind: relayClose, Conn: rc.conn})
}

// roamNodeDown ends what resumed connections shared with node: the
// sessions whose connection was there wait for another resume; the
// connections whose session was there are closed (their session is gone).
func (s *Server) roamNodeDown(node string) {
	s.mu.Lock()
	var sessions []*session
	var conns []string
	for id, ss := range s.roam.conns {
		sessions, conns = append(sessions, ss), append(conns, id)
	}
	var clients []*client
	for id, stub := range s.roam.stubs {
		if stub.away.node == node {
			delete(s.roam.stubs, id)
			if c := stub.away.c; c.sess == stub {
				c.sess = nil
				clients = append(clients, c)
			}
		}
	}
	s.mu.Unlock()
	for i, ss := range sessions {
		ss.mu.Lock()
		here := ss.remote != nil && ss.remote.node == node
		ss.mu.Unlock()
		if here {
			s.remoteConnGone(&relayMsg{Kind: relayConn, Conn: conns[i], Down: true})
		}
	}
	for _, c := range clients {
		c.stopWith("the server holding this session is gone; log in again")
	}
}
