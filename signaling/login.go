package signaling

import (
	"errors"

	"videochat/cluster"
)

// login gives c a session under the name it asked for, or tells it why
// not (PROTOCOL.md, login).
func (s *Server) login(c *client, raw, authToken string) {
	name, err := cleanName(raw)
	if err != nil {
		s.count.err(ErrLoginRefused)
		loginFailed(c, err.Error())
		return
	}
	if s.auth != nil && !s.authorize(c, name, authToken) {
		return
	}
	claim, msg := s.claimName(c, name) // not under the lock: it asks the cluster
	if msg != "" {
		loginFailed(c, msg)
		return
	}
	servers := s.iceServers(name, c.host) // not under the lock: it calls out
	already, taken := s.register(c, name, servers, claim)
	if already != "" || taken {
		s.cfg.Cluster.Release(claim)
	}
	switch {
	case already != "":
		s.count.err(ErrProtocol)
		c.sendError("already logged in as " + already)
	case taken:
		s.count.err(ErrLoginRefused)
		loginFailed(c, "the name "+name+" is taken (or one that looks the same), choose another")
	default:
		s.log.Info("login", "name", name)
		s.presenceChanged()
	}
}

func loginFailed(c *client, msg string) {
	c.sendMsg(&Message{Type: typeLogin, Success: new(false), Message: msg})
}

// authorize checks a login's token when access control is on. It runs
// before the name is looked up, so that a stranger learns nothing (not
// even which names are taken). A connection's logins run one at a time on
// its reader, so c.sess is stable here.
func (s *Server) authorize(c *client, name, token string) bool {
	s.mu.Lock()
	ss := c.sess
	s.mu.Unlock()
	if ss != nil {
		s.count.err(ErrProtocol)
		c.sendError("already logged in as " + ss.name)
		return false
	}
	if err := s.auth.verify(token, name); err != nil {
		s.count.err(ErrAuthFailed)
		s.log.Info("login refused", "name", name, "reason", err, "detail", errors.Unwrap(err))
		loginFailed(c, err.Error())
		return false
	}
	return true
}

// register gives c a session under name and queues the login reply, or
// reports the name c is already logged in as, or that name is taken. The
// name's confusable keys are computed under the lock (Unicode processing
// of client input), so the lock is released by defer: a panic there ends
// this connection only, never leaves the server locked.
func (s *Server) register(c *client, name string, servers []ICEServer, claim cluster.Claim) (already string, taken bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case c.sess != nil:
		return c.sess.name, false
	case s.nameInUse(name):
		return "", true
	}
	ss := newSession(name, c, &s.clock)
	ss.token = s.newToken()
	c.sess = ss
	s.names[name] = ss
	s.reserveName(name, ss)
	s.holdClaim(ss, claim)
	s.tokens[ss.token] = ss
	c.authed.Store(true)
	// The reply is queued under the lock, before the presence goroutine
	// can see the session: a users list never precedes it.
	c.sendMsg(&Message{Type: typeLogin, Success: new(true), ICEServers: servers, Session: ss.token})
	return "", false
}

func (s *Server) iceServers(name, host string) []ICEServer {
	servers := s.cfg.ICEServers(name, host)
	if servers == nil {
		servers = []ICEServer{}
	}
	return servers
}

// resume attaches c to the session named by token, which it spends.
func (s *Server) resume(c *client, token string) {
	ss, newTok, other, already := s.spendToken(c, token)
	switch {
	case already != "":
		c.sendError("already logged in as " + already)
		return
	case ss == nil:
		if node := s.tokenNode(token); node != "" {
			s.resumeRemote(c, token, node) // issued by another node (roam.go)
			return
		}
		s.resumeFailed(c)
		return
	}
	reply, err := jsonFrame(&Message{Type: typeResume, Success: new(true), Name: ss.name,
		ICEServers: s.iceServers(ss.name, c.host), Session: newTok, Call: other})
	if err != nil {
		return
	}
	s.count.msgOut(typeResume)
	old, oldRemote, ok := s.attach(c, ss, newTok, reply)
	if !ok {
		s.resumeFailed(c)
		return
	}
	if old != nil {
		old.stopWith("session resumed on another connection")
	}
	s.closeRemote(oldRemote)
	s.log.Info("session resumed", "name", ss.name, "replaced", old != nil || oldRemote != nil)
	if users := s.currentUsers(); users != nil {
		ss.enqueueUsers(users) // the new connection starts with the list
	}
	s.showCallstate(ss)
}

func (s *Server) resumeFailed(c *client) {
	s.count.err(ErrResumeFailed)
	c.sendMsg(&Message{Type: typeResume, Success: new(false),
		Message: "this session is unknown, already resumed or expired; log in again"})
}

// spendToken replaces the resume token of the session it names and
// returns that session, its new token and the other participant of its
// call. already is the name c is logged in as, if it is; ss is nil when
// the token is unknown.
func (s *Server) spendToken(c *client, token string) (ss *session, newTok, other, already string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c.sess != nil {
		return nil, "", "", c.sess.name
	}
	if ss = s.tokens[token]; ss == nil {
		return nil, "", "", ""
	}
	delete(s.tokens, token)
	ss.token = s.newToken()
	s.tokens[ss.token] = ss
	if ss.call != nil {
		other = ss.call.other(ss).name
	} else {
		other = s.relayPeer(ss)
	}
	return ss, ss.token, other, ""
}

// attach moves ss to c, queueing reply (and what ss queued while
// detached) first; old is the connection it was attached to. Under s.mu,
// so that c.sess and the session's connection change together
// (unregister of the old connection then finds no session). When the
// session ended meanwhile, its new token is forgotten. oldRemote is the
// connection on another node it was attached to (roam.go).
func (s *Server) attach(c *client, ss *session, newTok string, reply []byte) (old *client, oldRemote *remoteConn, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, oldRemote, ok = ss.attachLocal(c, reply)
	if !ok {
		if s.tokens[newTok] == ss {
			delete(s.tokens, newTok)
		}
		return nil, nil, false
	}
	c.sess = ss
	c.authed.Store(true)
	if old != nil {
		old.sess = nil
	}
	return old, oldRemote, true
}

// finishSession releases an ended session: its name, its token, its call
// (the other participant gets leave "disconnected").
func (s *Server) finishSession(ss *session) {
	cl := s.forget(ss)
	s.closeRemote(ss.takeRemote())
	s.releaseClaim(ss)
	if cl != nil {
		s.endCall(cl, ReasonGone, cl.other(ss))
	}
	s.endRelayed(ss, ReasonGone)
	s.log.Info("logout", "name", ss.name)
	s.presenceChanged()
}

// forget removes ss's name (and its confusable keys: Unicode processing,
// hence the deferred unlock) and token, and returns its call.
func (s *Server) forget(ss *session) *call {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.names[ss.name] == ss {
		delete(s.names, ss.name)
		s.releaseName(ss.name, ss)
	}
	if s.tokens[ss.token] == ss {
		delete(s.tokens, ss.token)
	}
	return ss.call
}
