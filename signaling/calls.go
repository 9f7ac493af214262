package signaling

import (
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"time"

	"github.com/pion/webrtc/v4"
)

// call is one 1:1 call. Its fields are guarded by Server.mu.
type call struct {
	id             string
	log            *slog.Logger // with the call's id
	caller, callee *session
	media          MediaCall // nil until setUp has created it
	peers          map[*session]Peer
	offered        bool // the callee has been sent the offer
	accepted       bool
	ended          bool
	timer          *time.Timer
	ring           time.Duration // how long the callee's phone rings
	callerIP       string
	// cands counts each participant's candidates in this call (capped at
	// Config.MaxCandidates); capped records that it was told.
	cands, capped map[*session]int
	// mediaDown: the participant's media connection is interrupted (SFU);
	// shownDown: the other participant was last told "reconnecting".
	mediaDown, shownDown map[*session]bool
}

func (cl *call) other(c *session) *session {
	if c == cl.caller {
		return cl.callee
	}
	return cl.caller
}

// offer starts a call to name, or renegotiates the caller's media in one.
// ip is the caller's connection's address (call attempts are limited per
// caller and per address).
func (s *Server) offer(c *session, ip netip.Addr, name, sdp string) {
	s.offerOnce(c, ip, name, sdp, true)
}

func (s *Server) offerOnce(c *session, ip netip.Addr, name, sdp string, mayPreempt bool) {
	remote, remoteProblem := s.locateRemote(c, name) // a user of another node (relay.go)
	d := s.decideOffer(c, ip, name, mayPreempt, remote, remoteProblem)
	switch {
	case d.inCall != nil:
		s.renegotiate(c, d.inCall, d.peer, name, sdp)
	case d.preempt != nil:
		// The callee's phone rings for a caller they declined or missed
		// recently: that ring does not make them busy for anyone else.
		old := d.preempt
		old.log.Info("ring of a declined caller ended for another call", "caller", old.caller.name, "callee", name)
		s.endCall(old, ReasonNoAnswer, old.caller, old.callee)
		s.offerOnce(c, ip, name, sdp, false)
	case d.problem != "":
		s.count.err(d.kind)
		c.sendError(d.problem)
		if d.busy {
			c.sendMsg(&Message{Type: typeLeave, Name: name, Reason: ReasonBusy})
		}
	default:
		s.count.calls.Add(1)
		d.call.log.Info("call", "caller", c.name, "callee", name)
		s.setUp(d.call, sdp, d.early)
	}
}

// renegotiate applies an offer of c, who is in a call with other, to its
// PeerConnection peer (nil while the call is being set up).
func (s *Server) renegotiate(c, other *session, peer Peer, name, sdp string) {
	switch {
	case other.name != name:
		s.count.err(ErrCallRefused)
		c.sendError("you are already in a call with " + other.name + "; hang up first")
	case peer == nil:
		s.count.err(ErrProtocol)
		c.sendError("the call with " + name + " is still being set up; try again")
	default:
		if err := peer.HandleOffer(sdp); err != nil {
			s.count.err(ErrMedia)
			c.sendError("could not apply your offer: " + err.Error())
		}
	}
}

// offerDecision is what an offer leads to; exactly one case is set.
type offerDecision struct {
	inCall  *session // c is in a call with inCall: renegotiate through peer
	peer    Peer
	preempt *call // end this ring first, then try again
	problem string
	kind    string // the error kind counted for problem
	busy    bool
	call    *call // a new call, with the caller's early candidates
	early   []webrtc.ICECandidateInit
}

// decideOffer does an offer's bookkeeping under s.mu (released by defer:
// it handles client input). A new call has no media yet: setUp creates
// it, outside the lock.
func (s *Server) decideOffer(c *session, ip netip.Addr, name string, mayPreempt bool, remote *session, remoteProblem string) offerDecision {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cl := c.call; cl != nil {
		return offerDecision{inCall: cl.other(c), peer: cl.peers[c]}
	}
	callee, problem, busy := s.checkCallee(c, name)
	if callee == nil && (remote != nil || remoteProblem != "") {
		callee, problem, busy = remote, remoteProblem, false
	}
	if old := s.preemptable(s.names[name], busy, c, ip.String()); old != nil && mayPreempt {
		return offerDecision{preempt: old}
	}
	if problem != "" {
		return offerDecision{problem: problem, kind: ErrCallRefused, busy: busy}
	}
	now := s.cfg.now()
	if problem := s.limitCalls(c.name, ip.String(), now); problem != "" {
		return offerDecision{problem: problem, kind: ErrCallRateLimited}
	}
	cl := s.newCall(c, callee, ip.String(), now)
	early := c.early
	c.early, c.earlyDropped = nil, 0
	cl.cands[c] = len(early)
	return offerDecision{call: cl, early: early}
}

// limitCalls counts a call attempt of caller from address ip and returns
// a problem when either made too many; s.mu held.
func (s *Server) limitCalls(caller, ip string, now time.Time) string {
	okName, waitName := s.callsBy.allow(caller, now)
	okIP, waitIP := true, time.Duration(0)
	if okName {
		okIP, waitIP = s.callsIP.allow(ip, now)
	}
	if okName && okIP {
		return ""
	}
	wait := max(waitName, waitIP)
	return fmt.Sprintf("too many calls, wait %d s", int(math.Ceil(wait.Seconds())))
}

// newCall registers a call from c (at address ip) to callee; s.mu held.
// It rings briefly when callee declined or missed this caller recently.
func (s *Server) newCall(c, callee *session, ip string, now time.Time) *call {
	ring := s.cfg.RingTimeout
	if s.declined.has(declineKey(callee.name, c.name), now) || s.declined.has(declineKey(callee.name, ip), now) {
		ring = min(ring, s.cfg.DeclinedRingTimeout)
	}
	id := newID()
	cl := &call{id: id, log: s.log.With("call", id), caller: c, callee: callee, peers: map[*session]Peer{},
		mediaDown: map[*session]bool{}, shownDown: map[*session]bool{}, ring: ring, callerIP: ip,
		cands: map[*session]int{}, capped: map[*session]int{}}
	c.call, callee.call = cl, cl
	s.calls[cl] = struct{}{}
	s.adoptProxy(cl)
	return cl
}

// preemptable returns the call that makes callee busy when it is only
// ringing them on behalf of a caller (name or address) they declined or
// did not answer within DeclineMemory, and the new caller (c from address
// ip) is someone else whom they have not declined. Called with s.mu held.
func (s *Server) preemptable(callee *session, busy bool, c *session, ip string) *call {
	if !busy || callee == nil {
		return nil
	}
	cl := callee.call
	if cl == nil || cl.accepted || cl.ended || cl.callee != callee || cl.caller == c {
		return nil
	}
	now := s.cfg.now()
	declined := func(name, ip string) bool {
		return s.declined.has(declineKey(callee.name, name), now) || s.declined.has(declineKey(callee.name, ip), now)
	}
	if declined(cl.caller.name, cl.callerIP) && !declined(c.name, ip) {
		return cl
	}
	return nil
}

// checkCallee is called with s.mu held.
func (s *Server) checkCallee(c *session, name string) (callee *session, problem string, busy bool) {
	callee = s.names[name]
	switch {
	case callee == nil:
		return nil, name + " is not online", false
	case callee == c:
		return nil, "you cannot call yourself", false
	case callee.call != nil || s.busyElsewhere(callee):
		return nil, name + " is in another call", true
	}
	return callee, "", false
}
