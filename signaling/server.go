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
	"net/netip"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"videochat/cluster"
)

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

// Close tells every client the server is going away, ends every call and
// waits (until ctx ends) for all connections to finish.
func (s *Server) Close(ctx context.Context) error {
	for _, cl := range s.shutDown() {
		s.endCall(cl, ReasonShutdown, cl.caller, cl.callee)
	}
	for _, c := range s.openClients() {
		c.stop()
	}
	s.endDetached()
	err := s.waitClients(ctx)
	// Connections that were lost while closing may have detached sessions.
	s.endDetached()
	s.stopOnce.Do(func() { close(s.presenceStop) })
	<-s.presenceDone
	return err
}

// shutDown marks the server closed (no new connections, no async work)
// and returns its calls.
func (s *Server) shutDown() []*call {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	calls := make([]*call, 0, len(s.calls))
	for cl := range s.calls {
		calls = append(calls, cl)
	}
	return calls
}

func (s *Server) openClients() []*client {
	s.mu.Lock()
	defer s.mu.Unlock()
	clients := make([]*client, 0, len(s.clients))
	for c := range s.clients {
		clients = append(clients, c)
	}
	return clients
}

// waitClients waits for the connections' goroutines (and the server's
// other work) until ctx ends, then closes the sockets still open and
// waits at most closeLinger more: never without a bound.
func (s *Server) waitClients(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	for _, c := range s.openClients() {
		_ = c.conn.Close()
	}
	// Closed sockets end their goroutines at once; what remains is media
	// teardown, itself bounded.
	t := time.NewTimer(closeLinger)
	defer t.Stop()
	select {
	case <-done:
		return ctx.Err()
	case <-t.C:
		return fmt.Errorf("signaling: %w, and connections were still closing %v later", ctx.Err(), closeLinger)
	}
}

// closeLinger bounds how long Close waits, once its context has ended,
// for connections whose sockets it has closed.
const closeLinger = 5 * time.Second

// endDetached ends every session that waits for a resume, stopping its
// grace timer (and its call, if one is left).
func (s *Server) endDetached() {
	for _, ss := range s.sessions() {
		if (ss.current() != stateDetached && !ss.remoteAttached()) || !ss.end(nil) {
			continue
		}
		s.closeRemote(ss.takeRemote())
		cl := s.forget(ss)
		s.releaseClaim(ss)
		if cl != nil {
			s.endCall(cl, ReasonShutdown, cl.other(ss))
		}
		s.endRelayed(ss, ReasonShutdown)
	}
}

// addWork counts n goroutines as the server's work, which Close waits
// for; false once the server is closed.
func (s *Server) addWork(n int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(n)
	return true
}

// sessions returns the live sessions, attached or detached.
func (s *Server) sessions() []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	sessions := make([]*session, 0, len(s.names))
	for _, ss := range s.names {
		sessions = append(sessions, ss)
	}
	return sessions
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
