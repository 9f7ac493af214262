package signaling

import (
	"sync/atomic"
	"time"
)

// Error kinds counted in Stats.Errors: what went wrong for a client, in
// words an operator can alert on. The set is fixed (no label from client
// input).
const (
	ErrBadMessage      = "bad_message"         // not JSON, unknown type, missing or wrong fields
	ErrProtocol        = "protocol"            // a valid message at the wrong time (answer without a call, ...)
	ErrNotLoggedIn     = "not_logged_in"       // a call message before login
	ErrBadSDP          = "bad_sdp"             // an SDP refused before the SFU saw it (size, sections)
	ErrLoginRefused    = "login_refused"       // an invalid or taken name
	ErrAuthFailed      = "auth_failed"         // a missing, invalid or expired token
	ErrResumeFailed    = "resume_failed"       // an unknown, spent or expired session token
	ErrCallRefused     = "call_refused"        // the callee is offline, busy, or oneself
	ErrCallRateLimited = "call_rate_limited"   // too many call attempts
	ErrMedia           = "media"               // the SFU could not apply an offer, answer or candidate
	ErrCandidates      = "too_many_candidates" // candidate caps
	ErrFlood           = "flood"               // closed: over the message rate
	ErrTooBig          = "too_big"             // closed: a frame over the size limit
	ErrLoginTimeout    = "login_timeout"       // closed: no login in time
	ErrConnRefused     = "conn_refused"        // HTTP 503: connection caps or shutdown
	ErrSlowClient      = "slow_client"         // dropped: its send queue was full
	ErrInternal        = "internal"            // a recovered panic
)

var errKinds = []string{ErrBadMessage, ErrProtocol, ErrNotLoggedIn, ErrBadSDP, ErrLoginRefused,
	ErrAuthFailed, ErrResumeFailed, ErrCallRefused, ErrCallRateLimited, ErrMedia, ErrCandidates,
	ErrFlood, ErrTooBig, ErrLoginTimeout, ErrConnRefused, ErrSlowClient, ErrInternal}

// msgTypes are the message types counted by type; anything else counts
// as "other".
var msgTypes = []string{typeLogin, typeOffer, typeAnswer, typeCandidate, typeLeave, typeAccepted,
	typeRecording, typeError, typeUsers, typeResume, typePing, typePong, typeCallstate}

// reasons are the leave reasons a call can end with.
var reasons = []string{ReasonHangup, ReasonDeclined, ReasonNoAnswer, ReasonGone, ReasonFailed, ReasonShutdown}

// counters are the server's totals; one atomic add per event, indexed by
// fixed tables, so counting allocates nothing.
type counters struct {
	in, out [16]atomic.Uint64 // by index in msgTypes; the last: other
	errs    [24]atomic.Uint64 // by index in errKinds
	ended   [8]atomic.Uint64  // by index in reasons; the last: other
	calls   atomic.Uint64     // calls started
}

func index(list []string, v string, other int) int {
	for i, s := range list {
		if s == v {
			return i
		}
	}
	return other
}

func (n *counters) msgIn(typ string)  { n.in[index(msgTypes, typ, len(n.in)-1)].Add(1) }
func (n *counters) msgOut(typ string) { n.out[index(msgTypes, typ, len(n.out)-1)].Add(1) }
func (n *counters) err(kind string)   { n.errs[index(errKinds, kind, len(n.errs)-1)].Add(1) }
func (n *counters) end(reason string) { n.ended[index(reasons, reason, len(n.ended)-1)].Add(1) }

// Stats is a snapshot of the signaling's numbers.
type Stats struct {
	Connections int // open WebSockets
	UsersOnline int // logged-in users (sessions, including those held for a resume)
	// CallsRinging: calls not yet accepted; CallsActive: accepted calls.
	CallsRinging, CallsActive int
	CallsStarted              uint64
	CallsEnded                map[string]uint64 // by leave reason
	MessagesIn, MessagesOut   map[string]uint64 // by type ("other" for unknown types)
	Errors                    map[string]uint64 // by kind (Err* constants)
	// In a cluster: calls hosted here with a participant on another node
	// (HostedCrossNode), users of this node in calls hosted on another
	// (RemoteParticipants), connections here whose session lives on
	// another node after a resume (ResumedHere), and sessions here whose
	// connection is on another node (ResumedElsewhere).
	HostedCrossNode, RemoteParticipants int
	ResumedHere, ResumedElsewhere       int
}

// Stats returns the current numbers. Every key of the maps is present
// (zero or not), so a scraper sees each series from the start.
func (s *Server) Stats() Stats {
	st := Stats{CallsEnded: map[string]uint64{}, MessagesIn: map[string]uint64{},
		MessagesOut: map[string]uint64{}, Errors: map[string]uint64{}}
	s.mu.Lock()
	st.Connections, st.UsersOnline = s.nconns, len(s.names)
	st.HostedCrossNode, st.RemoteParticipants = len(s.relay.proxies), len(s.relay.bound)
	st.ResumedHere, st.ResumedElsewhere = len(s.roam.stubs), len(s.roam.conns)
	for cl := range s.calls {
		if cl.accepted {
			st.CallsActive++
		} else {
			st.CallsRinging++
		}
	}
	s.mu.Unlock()
	n := s.count
	st.CallsStarted = n.calls.Load()
	for i, r := range reasons {
		st.CallsEnded[r] = n.ended[i].Load()
	}
	if v := n.ended[len(n.ended)-1].Load(); v > 0 {
		st.CallsEnded["other"] = v
	}
	for i, t := range msgTypes {
		st.MessagesIn[t], st.MessagesOut[t] = n.in[i].Load(), n.out[i].Load()
	}
	st.MessagesIn["other"], st.MessagesOut["other"] = n.in[len(n.in)-1].Load(), n.out[len(n.out)-1].Load()
	for i, k := range errKinds {
		st.Errors[k] = n.errs[i].Load()
	}
	return st
}

// Connected implements sfu.ConnectObserver: the participant's media is
// up, setup after its offer (the caller) or answer (the callee).
func (p *peerSignal) Connected(setup time.Duration) {
	leg := "callee"
	if p.c == p.call.caller {
		leg = "caller"
	}
	p.call.log.Info("media connected", "participant", p.c.name, "leg", leg, "setup", setup.Round(time.Millisecond))
	if f := p.srv.cfg.OnMediaConnected; f != nil {
		f(leg, setup)
	}
}
