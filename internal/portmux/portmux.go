// Package portmux serves several protocols on one TCP listener, told apart
// by the first bytes each connection sends: a TLS ClientHello (and then,
// inside TLS, the ALPN protocol or the first bytes of the decrypted
// stream), an HTTP request line, a STUN message (TURN over TCP) or an
// RFC 4571-framed STUN message (ICE over TCP).
//
// It knows nothing of what it hands connections to: each Kind has its own
// net.Listener (Mux.Listener) whose Accept returns the connection with the
// bytes read for classification put back in front.
//
// Classification is bounded: the whole of it (TLS handshake included) must
// end within Config.Timeout after accept, however the bytes trickle in; a
// silent connection is closed then, and garbage at once. Each connection
// is classified on its own goroutine, at most Config.MaxPending at a time,
// so a slow one holds nobody else.
package portmux

import (
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Kind is what a connection carries.
type Kind int

// The kinds a connection can be classified as.
const (
	HTTP    Kind = iota // plain HTTP/1.x
	HTTPS               // HTTP inside TLS (a *tls.Conn when ALPN chose http/1.1 or h2)
	STUN                // STUN/TURN over TCP (RFC 5766 framing: bare STUN and ChannelData)
	STUNTLS             // STUN/TURN inside TLS (turns:), decrypted
	ICETCP              // RFC 4571-framed STUN: passive ICE-TCP
	numKinds
)

func (k Kind) String() string {
	switch k {
	case HTTP:
		return "http"
	case HTTPS:
		return "https"
	case STUN:
		return "stun"
	case STUNTLS:
		return "stun-tls"
	case ICETCP:
		return "ice-tcp"
	}
	return "unknown"
}

// ALPNTURN is the ALPN protocol id of TURN over TLS (RFC 7443).
const ALPNTURN = "stun.turn"

// Defaults for zero Config fields.
const (
	DefaultTimeout    = 10 * time.Second
	DefaultMaxPending = 10000
	// DefaultMaxPendingPerSource keeps one address from filling
	// MaxPending with silent connections (it would need 40 addresses),
	// while an office behind one NAT address, whose browsers open several
	// connections each at once, still gets through (50 was too few: 200
	// slow HTTP clients plus a WebSocket from one address were refused).
	DefaultMaxPendingPerSource = 256
)

// Config configures a Mux.
type Config struct {
	// TLS, if set, terminates TLS connections (its NextProtos get
	// "stun.turn" added, and "http/1.1" when empty). Without it TLS
	// connections are closed.
	TLS *tls.Config
	// Timeout bounds classification of one connection, from accept to
	// hand-over, TLS handshake included (default 10 s).
	Timeout time.Duration
	// MaxPending caps connections being classified at once; more are
	// closed at once (default 10,000: a login storm of thousands of
	// clients connecting together must get through).
	MaxPending int
	// MaxPendingPerSource caps them per client address (default 256), so
	// that silent connections from one address cannot take every slot.
	MaxPendingPerSource int
	// Logger (default: discard).
	Logger *slog.Logger
}

// Mux accepts connections from one listener and hands each to the
// listener of its kind. Create it with New, take the Listeners you serve,
// then run Serve.
type Mux struct {
	ln      net.Listener
	cfg     Config
	tls     *tls.Config
	pending chan struct{} // semaphore of classifications in progress
	done    chan struct{}
	subs    [numKinds]*subListener

	mu      sync.Mutex
	closed  bool
	wg      sync.WaitGroup     // classification goroutines
	sources map[netip.Addr]int // classifications in progress per source

	closeOnce sync.Once
}

// New wraps ln.
func New(ln net.Listener, cfg Config) *Mux {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxPending <= 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	if cfg.MaxPendingPerSource <= 0 {
		cfg.MaxPendingPerSource = DefaultMaxPendingPerSource
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Mux{ln: ln, cfg: cfg, pending: make(chan struct{}, cfg.MaxPending), done: make(chan struct{}),
		sources: make(map[netip.Addr]int)}
	if cfg.TLS != nil {
		t := cfg.TLS.Clone()
		if len(t.NextProtos) == 0 {
			t.NextProtos = []string{"http/1.1"}
		}
		t.NextProtos = append(t.NextProtos, ALPNTURN)
		m.tls = t
	}
	return m
}

// Addr is the address of the shared listener.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Listener returns the listener of kind k (the same one on every call).
// Connections of a kind nobody asked a Listener for are closed, so take
// every Listener before calling Serve.
func (m *Mux) Listener(k Kind) net.Listener {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.subs[k] == nil {
		m.subs[k] = &subListener{mux: m, conns: make(chan net.Conn), closed: make(chan struct{})}
	}
	return m.subs[k]
}

func (m *Mux) sub(k Kind) *subListener {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.subs[k]
}

// Serve accepts until Close (then it returns nil) or a permanent error.
func (m *Mux) Serve() error {
	backoff := 5 * time.Millisecond
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				return nil
			default:
			}
			if !errors.Is(err, net.ErrClosed) {
				m.cfg.Logger.Warn("portmux: accept failed, retrying", "err", err)
				select {
				case <-time.After(backoff):
				case <-m.done:
					return nil
				}
				backoff = min(2*backoff, time.Second)
				continue
			}
			return err
		}
		backoff = 5 * time.Millisecond
		select {
		case m.pending <- struct{}{}:
		default:
			m.cfg.Logger.Debug("portmux: too many connections being classified, closing", "remote", c.RemoteAddr().String())
			_ = c.Close()
			continue
		}
		src := sourceOf(c.RemoteAddr())
		m.mu.Lock()
		if m.closed { // Close is waiting for the classifications: add none
			m.mu.Unlock()
			<-m.pending
			_ = c.Close()
			return nil
		}
		if m.sources[src] >= m.cfg.MaxPendingPerSource {
			m.mu.Unlock()
			<-m.pending
			m.cfg.Logger.Debug("portmux: too many connections being classified from one address, closing", "remote", c.RemoteAddr().String())
			_ = c.Close()
			continue
		}
		m.sources[src]++
		m.wg.Add(1)
		m.mu.Unlock()
		go func() {
			defer m.wg.Done()
			defer m.release(src)
			m.handle(c)
		}()
	}
}

// release frees src's classification slot.
func (m *Mux) release(src netip.Addr) {
	m.mu.Lock()
	if m.sources[src]--; m.sources[src] <= 0 {
		delete(m.sources, src)
	}
	m.mu.Unlock()
	<-m.pending
}

// Close closes the shared listener and every Listener, and waits for the
// classifications in progress (each ends within Timeout; Close cuts them
// short by closing their connections' deadlines). Connections already
// handed over belong to their receivers.
func (m *Mux) Close() error {
	var err error
	m.closeOnce.Do(func() {
		m.mu.Lock()
		m.closed = true
		subs := m.subs
		m.mu.Unlock()
		close(m.done)
		err = m.ln.Close()
		for _, s := range subs {
			if s != nil {
				_ = s.Close()
			}
		}
		m.wg.Wait()
	})
	return err
}

// handle classifies c and hands it over, or closes it.
func (m *Mux) handle(c net.Conn) {
	deadline := time.Now().Add(m.cfg.Timeout)
	_ = c.SetDeadline(deadline)
	// Close cuts a classification short.
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		select {
		case <-m.done:
			_ = c.SetDeadline(time.Now())
		case <-stop:
		}
	}()
	conn, kind, err := m.classify(c, deadline)
	if err != nil {
		m.cfg.Logger.Debug("portmux: closing unclassified connection", "remote", c.RemoteAddr().String(), "err", err)
		_ = c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	s := m.sub(kind)
	if s == nil || !s.deliver(conn, deadline) {
		m.cfg.Logger.Debug("portmux: nobody takes this kind, closing", "kind", kind.String(), "remote", c.RemoteAddr().String())
		_ = conn.Close()
	}
}

func (m *Mux) classify(c net.Conn, deadline time.Time) (net.Conn, Kind, error) {
	pc, kind, err := peek(c, false)
	if err != nil {
		return nil, 0, err
	}
	if kind != tlsKind {
		return pc, kind, nil
	}
	if m.tls == nil {
		return nil, 0, errNoTLS
	}
	tc := tls.Server(pc, m.tls)
	ctx, cancel := contextWithDeadline(deadline)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, 0, err
	}
	switch tc.ConnectionState().NegotiatedProtocol {
	case ALPNTURN:
		return tc, STUNTLS, nil
	case "http/1.1", "h2":
		return tc, HTTPS, nil
	}
	// No ALPN (libwebrtc's TURN client sends none): look inside.
	inner, kind, err := peek(tc, true)
	if err != nil {
		return nil, 0, err
	}
	return inner, kind, nil
}

var (
	errNoTLS   = errors.New("portmux: TLS connection but no certificate configured")
	errGarbage = errors.New("portmux: unrecognised protocol")
)

// subListener is the net.Listener of one Kind.
type subListener struct {
	mux       *Mux
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

// deliver waits until Accept takes c, until deadline, or until close.
func (s *subListener) deliver(c net.Conn, deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case s.conns <- c:
		return true
	case <-s.closed:
	case <-t.C:
	}
	return false
}

func (s *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.closed:
		return nil, net.ErrClosed
	}
}

// Close stops this listener only; the Mux and its other kinds go on.
func (s *subListener) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return nil
}

func (s *subListener) Addr() net.Addr { return s.mux.ln.Addr() }
