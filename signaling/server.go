// Package signaling implements the WebSocket JSON protocol of
// ../shared/PROTOCOL.md: presence, calls by name, and the SDP/ICE exchange
// with the SFU's per-participant PeerConnections.
package signaling

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
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
	Logger         *slog.Logger
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
}

// Server is the signaling hub. It is an http.Handler for WebSocket upgrades.
type Server struct {
	cfg      Config
	log      *slog.Logger
	upgrader websocket.Upgrader

	mu      sync.Mutex
	clients map[*client]struct{}
	names   map[string]*client
	keys    map[string]*client // nameKey -> holder of the name (names.go)
	calls   map[*call]struct{}
	closed  bool
	wg      sync.WaitGroup // client goroutines and call timers at work
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Media == nil {
		return nil, errors.New("signaling: Config.Media is required")
	}
	cfg.setDefaults()
	s := &Server{
		cfg: cfg, log: cfg.Logger,
		clients: map[*client]struct{}{}, names: map[string]*client{}, calls: map[*call]struct{}{},
	}
	s.upgrader = websocket.Upgrader{CheckOrigin: s.checkOrigin}
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
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.wg.Add(2)
	}
	s.mu.Unlock()
	if closed {
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.wg.Add(-2)
		return // the upgrader has replied (403 for a foreign origin)
	}
	c := &client{srv: s, conn: conn, host: r.Host, send: make(chan []byte, s.cfg.SendQueue),
		quit: make(chan struct{}), kill: make(chan struct{})}
	s.mu.Lock()
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	go func() { defer s.wg.Done(); c.writePump() }()
	defer s.wg.Done()
	c.readPump()
	s.unregister(c)
}

// handle runs one client frame. It is called on the client's reader.
func (s *Server) handle(c *client, data []byte) {
	m, err := parseMessage(data)
	if err != nil {
		c.sendError(err.Error())
		return
	}
	if m.Type == typeLogin {
		s.login(c, m.Name)
		return
	}
	s.mu.Lock()
	loggedIn := c.name != ""
	s.mu.Unlock()
	if !loggedIn {
		c.sendError("log in first: send {\"type\":\"login\",\"name\":...}")
		return
	}
	switch m.Type {
	case typeOffer:
		s.offer(c, m.Name, m.Offer.SDP)
	case typeAnswer:
		s.answer(c, m.Answer.SDP)
	case typeCandidate:
		s.candidate(c, m)
	case typeLeave:
		s.leave(c)
	}
}

func (s *Server) login(c *client, raw string) {
	name, err := cleanName(raw)
	fail := func(msg string) { c.sendMsg(&Message{Type: typeLogin, Success: new(false), Message: msg}) }
	if err != nil {
		fail(err.Error())
		return
	}
	s.mu.Lock()
	switch {
	case c.name != "":
		s.mu.Unlock()
		c.sendError("already logged in as " + c.name)
		return
	case s.nameInUse(name):
		s.mu.Unlock()
		fail("the name " + name + " is taken (or one that looks the same), choose another")
		return
	}
	c.name = name
	s.names[name] = c
	s.reserveName(name, c)
	s.mu.Unlock()

	servers := s.cfg.ICEServers(name, c.host)
	if servers == nil {
		servers = []ICEServer{}
	}
	c.sendMsg(&Message{Type: typeLogin, Success: new(true), ICEServers: servers})
	s.log.Info("login", "name", name)
	s.broadcastUsers()
}

// broadcastUsers sends the online list to every logged-in client. It
// enqueues under the lock so that lists arrive in the order of changes.
func (s *Server) broadcastUsers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	users := make([]string, 0, len(s.names))
	for n := range s.names {
		users = append(users, n)
	}
	slices.Sort(users)
	frame, err := jsonFrame(&Message{Type: typeUsers, Users: users})
	if err != nil {
		return
	}
	for _, c := range s.names {
		c.enqueue(frame)
	}
}

// unregister forgets a closed connection: its call ends, its name is freed.
func (s *Server) unregister(c *client) {
	c.stop()
	s.mu.Lock()
	delete(s.clients, c)
	name := c.name
	if name != "" && s.names[name] == c {
		delete(s.names, name)
		s.releaseName(name, c)
	}
	cl := c.call
	s.mu.Unlock()
	if cl != nil {
		s.endCall(cl, ReasonGone, cl.other(c))
	}
	if name != "" {
		s.log.Info("logout", "name", name)
		s.broadcastUsers()
	}
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
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.clients {
			_ = c.conn.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

func newID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
