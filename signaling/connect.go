package signaling

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/gorilla/websocket"
)

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
	if !s.addWork(2) { // this reader and its writer
		s.count.err(ErrConnRefused)
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	conn, err := s.upgrader.Upgrade(w, r, nil)
	if err != nil {
		s.wg.Add(-2)
		return // the upgrader has replied (403 for a foreign origin)
	}
	s.serve(newClient(s, conn, r, ip))
}

// serve runs c until its connection ends: its writer on a goroutine of
// its own, its reader on this one. Both were counted in s.wg.
func (s *Server) serve(c *client) {
	s.mu.Lock()
	s.clients[c] = struct{}{}
	s.mu.Unlock()
	go func() { defer s.wg.Done(); c.writePump() }()
	defer s.wg.Done()
	err := c.readPump()
	close(c.readDone)
	s.unregister(c, err)
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
