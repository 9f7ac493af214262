package signaling

// leave hangs up or declines; outside a call it is harmless.
func (s *Server) leave(c *session) {
	cl, reason := s.leaving(c)
	if cl == nil {
		return
	}
	if reason == ReasonDeclined {
		s.rememberDecline(cl)
	}
	s.endCall(cl, reason, cl.other(c))
}

// leaving drops c's early candidates and returns its call and why c
// leaves it: a callee who has not accepted declines.
func (s *Server) leaving(c *session) (*call, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c.early, c.earlyDropped = nil, 0
	cl := c.call
	if cl != nil && c == cl.callee && !cl.accepted {
		return cl, ReasonDeclined
	}
	return cl, ReasonHangup
}

// endCall ends cl once: the clients in tell are told why, then media is closed.
func (s *Server) endCall(cl *call, reason string, tell ...*session) {
	media, ok := s.markEnded(cl)
	if !ok {
		return
	}
	s.forgetRelayed(cl)
	s.count.end(reason)
	cl.log.Info("call ended", "reason", reason)
	for _, c := range tell {
		c.sendMsg(&Message{Type: typeLeave, Name: cl.other(c).name, Reason: reason})
	}
	if media != nil {
		media.Close()
	}
}

// markEnded ends cl's bookkeeping and returns its media (nil if setUp
// has not created it yet: setUp closes it then); false if cl had ended.
func (s *Server) markEnded(cl *call) (MediaCall, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl.ended {
		return nil, false
	}
	cl.ended = true
	delete(s.calls, cl)
	if cl.timer != nil {
		cl.timer.Stop()
	}
	for _, c := range []*session{cl.caller, cl.callee} {
		if c.call == cl {
			c.call, c.early = nil, nil
		}
	}
	return cl.media, true
}

// rememberDecline notes that cl's callee declined (or did not answer)
// its caller: the caller's next calls to them ring only briefly.
func (s *Server) rememberDecline(cl *call) {
	now := s.cfg.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl.accepted {
		return
	}
	s.declined.add(declineKey(cl.callee.name, cl.caller.name), now)
	s.declined.add(declineKey(cl.callee.name, cl.callerIP), now)
}

func declineKey(callee, caller string) string { return callee + "\x00" + caller }

// async runs f on a goroutine the server waits for, unless it is closed.
// A panic in f is logged with its stack and goes no further.
func (s *Server) async(f func()) {
	if !s.addWork(1) {
		return
	}
	go func() {
		defer s.wg.Done()
		defer func() { recovered(s.log, recover(), "async") }()
		f()
	}()
}
