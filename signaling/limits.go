package signaling

import (
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"strings"
	"time"
)

// tokenBucket is a per-connection message rate limit: burst tokens, refilled
// at rate per second. It is used by one goroutine (the reader).
type tokenBucket struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate float64, burst int, now time.Time) *tokenBucket {
	return &tokenBucket{rate: rate, burst: float64(burst), tokens: float64(burst), last: now}
}

// allow takes one token at time now, or reports false when none is left.
func (b *tokenBucket) allow(now time.Time) bool {
	if el := now.Sub(b.last).Seconds(); el > 0 {
		b.tokens = math.Min(b.burst, b.tokens+el*b.rate)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// attemptLimiter allows at most max events per key in any window (a sliding
// log per key). Keys with no event in the last window are forgotten, so its
// memory is bounded by the events of one window. Guarded by Server.mu.
type attemptLimiter struct {
	max    int
	window time.Duration
	log    map[string][]time.Time
	swept  time.Time
}

func newAttemptLimiter(max int, window time.Duration) *attemptLimiter {
	return &attemptLimiter{max: max, window: window, log: map[string][]time.Time{}}
}

// allow records an attempt for key at now, or returns how long to wait
// until one is allowed (the attempt is then not recorded).
func (l *attemptLimiter) allow(key string, now time.Time) (bool, time.Duration) {
	l.sweep(now)
	ts := l.log[key]
	cut := 0
	for cut < len(ts) && now.Sub(ts[cut]) >= l.window {
		cut++
	}
	ts = ts[cut:]
	if len(ts) >= l.max {
		l.log[key] = ts
		return false, ts[0].Add(l.window).Sub(now)
	}
	l.log[key] = append(ts, now)
	return true, 0
}

// sweep forgets keys without a recent attempt, at most once per window.
func (l *attemptLimiter) sweep(now time.Time) {
	if now.Sub(l.swept) < l.window {
		return
	}
	l.swept = now
	for k, ts := range l.log {
		if len(ts) == 0 || now.Sub(ts[len(ts)-1]) >= l.window {
			delete(l.log, k)
		}
	}
}

// recentSet remembers keys for a while (callees that declined a caller).
// Guarded by Server.mu; expired keys are swept at most once per ttl, so its
// size is bounded by the keys added in one ttl.
type recentSet struct {
	ttl   time.Duration
	at    map[string]time.Time
	swept time.Time
}

func (r *recentSet) add(key string, now time.Time) {
	if r.at == nil {
		r.at = map[string]time.Time{}
	}
	if now.Sub(r.swept) >= r.ttl {
		r.swept = now
		for k, t := range r.at {
			if now.Sub(t) >= r.ttl {
				delete(r.at, k)
			}
		}
	}
	r.at[key] = now
}

func (r *recentSet) has(key string, now time.Time) bool {
	t, ok := r.at[key]
	return ok && now.Sub(t) < r.ttl
}

// checkSDP refuses a description that is too large or has too many media
// sections before the SFU parses it.
func (s *Server) checkSDP(typ, sdp string) string {
	if len(sdp) > s.cfg.MaxSDPSize {
		return fmt.Sprintf("%s: the SDP is %d bytes, more than the %d this server accepts", typ, len(sdp), s.cfg.MaxSDPSize)
	}
	n := strings.Count(sdp, "\nm=")
	if strings.HasPrefix(sdp, "m=") {
		n++
	}
	if n > s.cfg.MaxSDPMediaSections {
		return fmt.Sprintf("%s: the SDP has %d media sections (m= lines), more than the %d this server accepts", typ, n, s.cfg.MaxSDPMediaSections)
	}
	return ""
}

// clientIP is the address connection caps and call limits are keyed on:
// the peer's address, or, when the peer is a trusted proxy, the nearest
// address in X-Forwarded-For that is not one.
func (s *Server) clientIP(r *http.Request) netip.Addr {
	ip := remoteIP(r.RemoteAddr)
	if !s.trusted(ip) {
		return ip
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return ip // malformed: keep the proxy's address
		}
		a = a.Unmap()
		if !s.trusted(a) {
			return a
		}
		ip = a
	}
	return ip
}

func (s *Server) trusted(ip netip.Addr) bool {
	for _, p := range s.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func remoteIP(addr string) netip.Addr {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}
	}
	return ip.Unmap()
}

// admit counts a new WebSocket against the caps, or says why it is refused.
func (s *Server) admit(ip netip.Addr) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return "server shutting down"
	case s.nconns >= s.cfg.MaxConns:
		return "too many connections, try again later"
	case s.perIP[ip] >= s.cfg.MaxConnsPerIP:
		return "too many connections from your address, try again later"
	}
	s.nconns++
	s.perIP[ip]++
	return ""
}

func (s *Server) release(ip netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nconns--
	if s.perIP[ip]--; s.perIP[ip] <= 0 {
		delete(s.perIP, ip)
	}
}

// recovered logs a panic of a goroutine that handles client input, with
// its stack; it reports whether there was one. Call it deferred, through a
// closure: defer func() { recovered(log, recover(), ...) }().
func recovered(log *slog.Logger, p any, where string) bool {
	if p == nil {
		return false
	}
	log.Error("panic recovered", "where", where, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return true
}
