package signaling

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"time"

	"github.com/pion/webrtc/v4"

	"videochat/sfu"
)

// maxEarlyCandidates bounds the candidates a client may send before its offer.
const maxEarlyCandidates = 64

// call is one 1:1 call. Its fields are guarded by Server.mu.
type call struct {
	id             string
	log            *slog.Logger // with the call's id
	caller, callee *session
	media          MediaCall
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
		switch {
		case d.inCall.name != name:
			s.count.err(ErrCallRefused)
			c.sendError("you are already in a call with " + d.inCall.name + "; hang up first")
		case d.peer == nil:
			s.count.err(ErrProtocol)
			c.sendError("the call with " + name + " is still being set up; try again")
		default:
			if err := d.peer.HandleOffer(sdp); err != nil {
				s.count.err(ErrMedia)
				c.sendError("could not apply your offer: " + err.Error())
			}
		}
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
// it handles client input).
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
	okName, waitName := s.callsBy.allow(c.name, now)
	okIP, waitIP := true, time.Duration(0)
	if okName {
		okIP, waitIP = s.callsIP.allow(ip.String(), now)
	}
	if !okName || !okIP {
		wait := max(waitName, waitIP)
		return offerDecision{problem: fmt.Sprintf("too many calls, wait %d s", int(math.Ceil(wait.Seconds()))), kind: ErrCallRateLimited}
	}
	ring := s.cfg.RingTimeout
	if s.declined.has(declineKey(name, c.name), now) || s.declined.has(declineKey(name, ip.String()), now) {
		ring = min(ring, s.cfg.DeclinedRingTimeout)
	}
	id := newID()
	cl := &call{id: id, log: s.log.With("call", id), caller: c, callee: callee, media: s.cfg.Media.NewCall(id), peers: map[*session]Peer{},
		mediaDown: map[*session]bool{}, shownDown: map[*session]bool{}, ring: ring, callerIP: ip.String(),
		cands: map[*session]int{}, capped: map[*session]int{}}
	c.call, callee.call = cl, cl
	s.calls[cl] = struct{}{}
	s.adoptProxy(cl)
	early := c.early
	c.early, c.earlyDropped = nil, 0
	cl.cands[c] = len(early)
	return offerDecision{call: cl, early: early}
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

// setUp creates both PeerConnections: the caller's offer is answered at
// once and the callee gets the server's offer, so both legs connect in
// parallel while the callee decides.
func (s *Server) setUp(cl *call, sdp string, early []webrtc.ICECandidateInit) {
	caller, callee := cl.caller, cl.callee
	pa, err := cl.media.Join(caller.name, &peerSignal{srv: s, call: cl, c: caller, other: callee.name})
	if err != nil {
		s.abort(cl, "could not start the call: "+err.Error())
		return
	}
	pb, err := cl.media.Join(callee.name, &peerSignal{srv: s, call: cl, c: callee, other: caller.name})
	if err != nil {
		s.abort(cl, "could not start the call: "+err.Error())
		return
	}
	s.mu.Lock()
	if cl.ended {
		s.mu.Unlock()
		cl.media.Close()
		return
	}
	cl.peers[caller], cl.peers[callee] = pa, pb
	s.mu.Unlock()
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
		s.abort(cl, "could not reach "+callee.name+": "+err.Error())
		return
	}
	s.startRinging(cl)
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
	s.mu.Lock()
	cl := c.call
	var peer Peer
	if cl != nil {
		peer = cl.peers[c]
	}
	s.mu.Unlock()
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
	s.mu.Lock()
	first := c == cl.callee && !cl.accepted && !cl.ended
	if first {
		cl.accepted = true
		if cl.timer != nil {
			cl.timer.Stop()
		}
	}
	s.mu.Unlock()
	if first {
		cl.log.Info("call accepted", "callee", c.name)
		cl.caller.sendMsg(&Message{Type: typeAccepted, Name: c.name, Recording: s.cfg.Recording})
		s.startRecording(cl)
	}
}

// startRecording begins recording once both people are in the call (the
// callee accepted), never while it rings: a declined, unanswered or busy
// call leaves nothing on disk. Both are told it has started.
func (s *Server) startRecording(cl *call) {
	if !s.cfg.Recording {
		return
	}
	cl.media.StartRecording()
	for _, c := range []*session{cl.caller, cl.callee} {
		c.sendMsg(&Message{Type: typeRecording, Recording: true})
	}
}

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

// leave hangs up or declines; outside a call it is harmless.
func (s *Server) leave(c *session) {
	s.mu.Lock()
	c.early, c.earlyDropped = nil, 0
	cl := c.call
	reason := ReasonHangup
	if cl != nil && c == cl.callee && !cl.accepted {
		reason = ReasonDeclined
	}
	s.mu.Unlock()
	if reason == ReasonDeclined {
		s.rememberDecline(cl)
	}
	if cl != nil {
		s.endCall(cl, reason, cl.other(c))
	}
}

// endCall ends cl once: the clients in tell are told why, then media is closed.
func (s *Server) endCall(cl *call, reason string, tell ...*session) {
	s.mu.Lock()
	if cl.ended {
		s.mu.Unlock()
		return
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
	s.mu.Unlock()
	s.forgetRelayed(cl)
	s.count.end(reason)
	cl.log.Info("call ended", "reason", reason)
	for _, c := range tell {
		c.sendMsg(&Message{Type: typeLeave, Name: cl.other(c).name, Reason: reason})
	}
	cl.media.Close()
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
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() { recovered(s.log, recover(), "async") }()
		f()
	}()
}

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

func jsonFrame(m *Message) ([]byte, error) { return json.Marshal(m) }
