// Package signaling implements the WebSocket JSON protocol of
// ../shared/PROTOCOL.md: presence, calls by name, and the SDP/ICE exchange
// with the SFU's per-participant PeerConnections.
package signaling

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"videochat/cluster"
)

// Config configures a Server. Zero fields get the defaults noted.
type Config struct {
	Media Media // required
	// ICEServers returns the ICE servers a user gets at login; host is the
	// host name the client used to reach us. May be nil.
	ICEServers func(user, host string) []ICEServer
	// AllowedOrigins admits pages from these origins (scheme://host[:port])
	// besides the server's own.
	AllowedOrigins []string
	// Recording tells clients that calls are recorded (they show it).
	Recording      bool
	RingTimeout    time.Duration // no-answer timeout, default 30 s
	MaxMessageSize int64         // default 256 KiB; bigger frames close with 1009
	SendQueue      int           // frames queued per client, default 64
	WriteTimeout   time.Duration // default 10 s
	PingInterval   time.Duration // default 15 s
	PongTimeout    time.Duration // no frame or pong for this long drops the client, default 45 s
	// ResumeGrace is how long a session whose WebSocket was lost without a
	// close frame is held for a resume, default 15 s.
	ResumeGrace time.Duration
	// ResumeQueue bounds the frames queued for a detached session; more
	// end the session. Default 256.
	ResumeQueue int
	Logger      *slog.Logger
	// AuthSecret turns access control on: login then needs a token, an
	// HS256 JWT signed with this secret whose sub is the name (auth.go).
	// Empty: anyone may log in with any free name.
	AuthSecret []byte
	// OnMediaConnected, if set, hears when a participant's media first
	// connects: leg is "caller" or "callee", setup the time from its
	// offer (caller) or answer (callee) to connected. It must not block.
	OnMediaConnected func(leg string, setup time.Duration)

	// Limits (issue 10). Each is refused or closed with a message a person
	// can act on; nothing a client does affects other clients.

	// MessageRate and MessageBurst: a token bucket of client frames per
	// connection; a client that exceeds it is closed with 1008 (policy
	// violation). Defaults 20/s, burst 50 (less than SendQueue, so that a
	// burst of requests is refused before its replies overflow the queue).
	MessageRate  float64
	MessageBurst int
	// LoginTimeout closes (1008) a connection that has neither logged in
	// nor resumed this long after connecting. Default 10 s.
	LoginTimeout time.Duration
	// MaxConns and MaxConnsPerIP cap open WebSockets in total and per
	// client address; more are refused with HTTP 503 before the upgrade.
	// Defaults 10,000 and 50.
	MaxConns      int
	MaxConnsPerIP int
	// TrustedProxies: when a connection comes from one of these networks,
	// its client address is taken from X-Forwarded-For (the nearest entry
	// that is not itself a trusted proxy). Empty (the default): the header
	// is ignored.
	TrustedProxies []netip.Prefix
	// MaxCandidates bounds the ICE candidates one participant may send in
	// one call (before and after its offer); more get an error and are
	// ignored. Default 200.
	MaxCandidates int
	// MaxSDPSize and MaxSDPMediaSections bound an offer's or answer's SDP
	// before the SFU parses it. Defaults 64 KiB and 16 m= lines.
	MaxSDPSize          int
	MaxSDPMediaSections int
	// CallAttempts per CallWindow per caller (and CallAttemptsPerIP per
	// client address) are allowed; more get an error saying how long to
	// wait. Defaults 5 per 30 s, 20 per address.
	CallAttempts      int
	CallAttemptsPerIP int
	CallWindow        time.Duration
	// DeclinedRingTimeout replaces RingTimeout for a call to someone who
	// declined (or did not answer) the same caller within DeclineMemory,
	// so a stranger who keeps calling cannot keep them busy. Defaults 5 s
	// and 5 min.
	DeclinedRingTimeout time.Duration
	DeclineMemory       time.Duration
	// PresenceInterval: users lists go out at most this often (changes in
	// between are coalesced). Default 250 ms.
	PresenceInterval time.Duration
	// PresenceTotalInterval: a change that leaves the (capped) list as it
	// was and changes only "total" goes out at most this often. Default 2 s.
	PresenceTotalInterval time.Duration
	// MaxUsersListed caps the names in a users list (the first in sorted
	// order; "total" gives the count). Default 100.
	MaxUsersListed int

	// Cluster shares names, presence and calls with other nodes
	// (cluster.go, relay.go). Nil: this node is alone (cluster.Alone).
	Cluster cluster.Directory

	// now is the clock of the limiters; tests replace it.
	now func() time.Time

	// afterFunc starts the grace timers (time.AfterFunc); tests replace it.
	afterFunc func(time.Duration, func()) stopper
	// authNow is the clock for token expiry (time.Now); tests replace it.
	authNow func() time.Time
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.RingTimeout, 30*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	def(&c.PingInterval, 15*time.Second)
	def(&c.PongTimeout, 45*time.Second)
	def(&c.ResumeGrace, 15*time.Second)
	if c.ResumeQueue <= 0 {
		c.ResumeQueue = 256
	}
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	if c.MessageRate <= 0 {
		c.MessageRate = 20
	}
	defInt(&c.MessageBurst, 50) // below SendQueue: a burst of requests cannot overflow the replies
	def(&c.LoginTimeout, 10*time.Second)
	defInt(&c.MaxConns, 10000)
	defInt(&c.MaxConnsPerIP, 50)
	defInt(&c.MaxCandidates, 200)
	defInt(&c.MaxSDPSize, 64<<10)
	defInt(&c.MaxSDPMediaSections, 16)
	defInt(&c.CallAttempts, 5)
	defInt(&c.CallAttemptsPerIP, 20)
	def(&c.CallWindow, 30*time.Second)
	def(&c.DeclinedRingTimeout, 5*time.Second)
	def(&c.DeclineMemory, 5*time.Minute)
	def(&c.PresenceInterval, 250*time.Millisecond)
	def(&c.PresenceTotalInterval, 2*time.Second)
	defInt(&c.MaxUsersListed, 100)
	if c.now == nil {
		c.now = time.Now
	}
	if c.afterFunc == nil {
		c.afterFunc = realAfter
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 256 << 10
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 64
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ICEServers == nil {
		c.ICEServers = func(string, string) []ICEServer { return nil }
	}
	if c.Cluster == nil {
		c.Cluster = cluster.Alone{}
	}
}

// Server is the signaling hub. It is an http.Handler for WebSocket upgrades.
type Server struct {
	cfg      Config
	log      *slog.Logger
	upgrader websocket.Upgrader
	auth     *authenticator // nil: access control off
	count    *counters      // for Stats

	clock sessionClock

	mu      sync.Mutex
	clients map[*client]struct{}
	names   map[string]*session // live sessions, attached or detached
	keys    map[string]*session // nameKey -> holder of the name (names.go)
	tokens  map[string]*session // the current resume token of each session
	calls   map[*call]struct{}
	closed  bool
	wg      sync.WaitGroup // client goroutines and call timers at work

	nconns   int                // open WebSockets (MaxConns)
	perIP    map[netip.Addr]int // open WebSockets per client address
	callsBy  *attemptLimiter    // call attempts per caller name
	callsIP  *attemptLimiter    // call attempts per client address
	declined recentSet          // "callee\x00caller" pairs that declined or went unanswered

	presenceKick chan struct{} // cap 1: the online list changed
	presenceStop chan struct{}
	presenceDone chan struct{}
	stopOnce     sync.Once
	lastUsers    []byte // the users frame sent last

	claims map[*session]cluster.Claim // cluster-wide name claims (cluster.go); s.mu
	relay  relayBook                  // calls with users of other nodes (relay.go); s.mu
	roam   roamBook                   // sessions resumed on another node (roam.go); s.mu
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Media == nil {
		return nil, errors.New("signaling: Config.Media is required")
	}
	cfg.setDefaults()
	s := &Server{
		cfg: cfg, log: cfg.Logger, count: &counters{},
		clients: map[*client]struct{}{}, names: map[string]*session{}, tokens: map[string]*session{},
		calls: map[*call]struct{}{}, auth: newAuthenticator(cfg.AuthSecret, cfg.authNow), perIP: map[netip.Addr]int{},
		callsBy:      newAttemptLimiter(cfg.CallAttempts, cfg.CallWindow),
		callsIP:      newAttemptLimiter(cfg.CallAttemptsPerIP, cfg.CallWindow),
		declined:     recentSet{ttl: cfg.DeclineMemory},
		presenceKick: make(chan struct{}, 1), presenceStop: make(chan struct{}), presenceDone: make(chan struct{}),
	}
	s.clock = sessionClock{count: s.count, grace: cfg.ResumeGrace, maxQueue: cfg.ResumeQueue, after: cfg.afterFunc,
		expire: func(ss *session, epoch uint64) {
			s.async(func() {
				if ss.expired(epoch) {
					s.log.Info("session expired", "name", ss.name)
					s.finishSession(ss)
				}
			})
		}}
	s.upgrader = websocket.Upgrader{CheckOrigin: s.checkOrigin, HandshakeTimeout: cfg.WriteTimeout}
	go s.runPresence(s.presenceStop)
	cfg.Cluster.Start(clusterEvents{s})
	return s, nil
}

// checkOrigin admits same-origin pages, configured origins, and clients
// that send no Origin (not browsers).
func (s *Server) checkOrigin(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	if strings.EqualFold(u.Host, r.Host) {
		return true
	}
	return slices.ContainsFunc(s.cfg.AllowedOrigins, func(o string) bool {
		return strings.EqualFold(strings.TrimRight(o, "/"), origin)
	})
}

// ServeHTTP upgrades the request and runs the connection until it ends.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !websocket.IsWebSocketUpgrade(r) {
		http.Error(w, "this endpoint speaks WebSocket", http.StatusBadRequest)
		return
	}
	ip := s.clientIP(r)
	if why := s.admit(ip); why != "" {
		s.count.err(ErrConnRefused)
		w.Header().Set("Retry-After", "10")
		http.Error(w, why, http.StatusServiceUnavailable)
		return
	}
	defer s.release(ip)
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.wg.Add(2)
	}
	s.mu.Unlock()
	if closed {
		s.count.err(ErrConnRefused)
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.wg.Add(-2)
		return // the upgrader has replied (403 for a foreign origin)
	}
	c := &client{srv: s, conn: conn, host: r.Host, ip: ip, remote: r.RemoteAddr,
		send: make(chan outFrame, s.cfg.SendQueue), usersReady: make(chan struct{}, 1),
		quit: make(chan struct{}), kill: make(chan struct{}), readDone: make(chan struct{})}
	s.mu.Lock()
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	go func() { defer s.wg.Done(); c.writePump() }()
	defer s.wg.Done()
	err = c.readPump()
	close(c.readDone)
	s.unregister(c, err)
}

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
		return
	case typeLogin:
		s.login(c, m.Name, m.Token)
		return
	case typeResume:
		s.resume(c, m.Session)
		return
	}
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
	s.handleSession(ss, c.ip, m, data)
}

// handleSession runs a logged-in user's frame (from a connection of this
// node, or relayed from the node holding the user's connection).
func (s *Server) handleSession(ss *session, ip netip.Addr, m *Message, data []byte) {
	if s.relayClient(ss, m, data) { // its call is hosted on another node (relay.go)
		return
	}
	switch m.Type {
	case typeOffer:
		if msg := s.checkSDP(m.Type, m.Offer.SDP); msg != "" {
			s.count.err(ErrBadSDP)
			ss.sendError(msg)
			return
		}
		s.offer(ss, ip, m.Name, m.Offer.SDP)
	case typeAnswer:
		if msg := s.checkSDP(m.Type, m.Answer.SDP); msg != "" {
			s.count.err(ErrBadSDP)
			ss.sendError(msg)
			return
		}
		s.answer(ss, m.Answer.SDP)
	case typeCandidate:
		s.candidate(ss, m)
	case typeLeave:
		s.leave(ss)
	case typeMute:
		s.relayMute(ss, m)
	}
}

func (s *Server) login(c *client, raw, authToken string) {
	name, err := cleanName(raw)
	fail := func(msg string) { c.sendMsg(&Message{Type: typeLogin, Success: new(false), Message: msg}) }
	if err != nil {
		s.count.err(ErrLoginRefused)
		fail(err.Error())
		return
	}
	if s.auth != nil {
		// Before the name is looked up, so that a stranger learns nothing
		// (not even which names are taken). A connection's logins run one
		// at a time on its reader, so c.sess is stable here.
		s.mu.Lock()
		ss := c.sess
		s.mu.Unlock()
		if ss != nil {
			s.count.err(ErrProtocol)
			c.sendError("already logged in as " + ss.name)
			return
		}
		if err := s.auth.verify(authToken, name); err != nil {
			s.count.err(ErrAuthFailed)
			s.log.Info("login refused", "name", name, "reason", err, "detail", errors.Unwrap(err))
			fail(err.Error())
			return
		}
	}
	claim, msg := s.claimName(c, name) // not under the lock: it asks the cluster
	if msg != "" {
		fail(msg)
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
		return
	case taken:
		s.count.err(ErrLoginRefused)
		fail("the name " + name + " is taken (or one that looks the same), choose another")
		return
	}
	s.log.Info("login", "name", name)
	s.presenceChanged()
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
	fail := func(msg string) {
		s.count.err(ErrResumeFailed)
		c.sendMsg(&Message{Type: typeResume, Success: new(false), Message: msg})
	}
	const gone = "this session is unknown, already resumed or expired; log in again"
	s.mu.Lock()
	if c.sess != nil {
		s.mu.Unlock()
		c.sendError("already logged in as " + c.sess.name)
		return
	}
	ss := s.tokens[token]
	if ss == nil {
		s.mu.Unlock()
		if node := s.tokenNode(token); node != "" {
			s.resumeRemote(c, token, node) // issued by another node (roam.go)
			return
		}
		fail(gone)
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

	reply, err := jsonFrame(&Message{Type: typeResume, Success: new(true), Name: ss.name,
		ICEServers: s.iceServers(ss.name, c.host), Session: newTok, Call: other})
	if err != nil {
		return
	}
	s.count.msgOut(typeResume)
	// Attach under s.mu so that c.sess and the session's connection change
	// together (unregister of the old connection then finds no session).
	s.mu.Lock()
	old, oldRemote, ok := ss.attachLocal(c, reply)
	if ok {
		c.sess = ss
		c.authed.Store(true)
		if old != nil {
			old.sess = nil
		}
	} else if s.tokens[newTok] == ss {
		delete(s.tokens, newTok)
	}
	s.mu.Unlock()
	if !ok {
		fail(gone)
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

// unregister forgets a closed connection. err is what ended its reader:
// a connection lost without a close frame detaches its session, which then
// waits for a resume; otherwise the session ends (its call ends, its name
// is freed).
func (s *Server) unregister(c *client, err error) {
	c.stop()
	s.mu.Lock()
	delete(s.clients, c)
	ss := c.sess
	c.sess = nil
	closing := s.closed
	s.mu.Unlock()
	if ss == nil {
		return // never logged in, or its session was resumed elsewhere
	}
	if ss.away != nil { // its session lives on another node (roam.go)
		s.awayLost(ss, c, err)
		return
	}
	if !closing && lostWithoutClose(err) && !c.killed() && ss.detach(c) {
		s.log.Info("connection lost, session held for resume", "name", ss.name, "err", err)
		s.showCallstate(ss)
		return
	}
	if ss.end(c) {
		s.finishSession(ss)
	}
}

// lostWithoutClose reports whether a read error means the connection went
// away without a close frame (reset, timeout, EOF), not closed on purpose.
// Gorilla reports an EOF as a CloseError with code 1006, which no peer
// ever sends in a close frame.
func lostWithoutClose(err error) bool {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code == websocket.CloseAbnormalClosure
	}
	return err != nil && !errors.Is(err, websocket.ErrReadLimit) && !errors.Is(err, errPolicy)
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

// Close tells every client the server is going away, ends every call and
// waits (until ctx ends) for all connections to finish.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	calls := make([]*call, 0, len(s.calls))
	for cl := range s.calls {
		calls = append(calls, cl)
	}
	s.mu.Unlock()
	for _, cl := range calls {
		s.endCall(cl, ReasonShutdown, cl.caller, cl.callee)
	}
	s.mu.Lock()
	for c := range s.clients {
		c.stop()
	}
	s.mu.Unlock()
	s.endDetached()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.clients {
			_ = c.conn.Close()
		}
		s.mu.Unlock()
		// Closed sockets end their goroutines at once; what remains is
		// media teardown, itself bounded. Never wait without a bound.
		select {
		case <-done:
			err = ctx.Err()
		case <-time.After(closeLinger):
			err = fmt.Errorf("signaling: %w, and connections were still closing %v later", ctx.Err(), closeLinger)
		}
	}
	// Connections that were lost while closing may have detached sessions.
	s.endDetached()
	s.stopOnce.Do(func() { close(s.presenceStop) })
	<-s.presenceDone
	return err
}

// closeLinger bounds how long Close waits, once its context has ended,
// for connections whose sockets it has closed.
const closeLinger = 5 * time.Second

// endDetached ends every session that waits for a resume, stopping its
// grace timer (and its call, if one is left).
func (s *Server) endDetached() {
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.names))
	for _, ss := range s.names {
		sessions = append(sessions, ss)
	}
	s.mu.Unlock()
	for _, ss := range sessions {
		if (ss.current() != stateDetached && !ss.remoteAttached()) || !ss.end(nil) {
			continue
		}
		s.closeRemote(ss.takeRemote())
		s.mu.Lock()
		delete(s.names, ss.name)
		delete(s.tokens, ss.token)
		cl := ss.call
		s.mu.Unlock()
		s.releaseClaim(ss)
		if cl != nil {
			s.endCall(cl, ReasonShutdown, cl.other(ss))
		}
		s.endRelayed(ss, ReasonShutdown)
	}
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
