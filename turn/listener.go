package turn

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

const (
	// idleTimeout closes established connections that stay silent longer
	// than an allocation lifetime (10 min default) plus margin; clients
	// refresh permissions every 5 min, so live allocations never hit it.
	idleTimeout = 11 * time.Minute
	// writeTimeout stops a client that does not read from stalling relays.
	writeTimeout     = 10 * time.Second
	maxAcceptBackoff = time.Second
)

// connListener wraps the TCP listener handed to pion. It
//   - caps concurrent connections, in total and per source (excess ones are
//     closed at once),
//   - closes connections that complete no allocation within the setup
//     timeout (a STUN header and a stall must not hold a slot for minutes),
//   - sets read and write deadlines so idle or stalled clients are dropped,
//   - retries temporary Accept errors (pion stops serving the listener on
//     any Accept error),
//   - closes every accepted connection on Close (pion leaves them open).
type connListener struct {
	net.Listener
	max, maxPerSource int
	setupTimeout      time.Duration
	log               *slog.Logger

	mu       sync.Mutex
	conns    map[*deadlineConn]struct{}
	byRemote map[string]*deadlineConn // addrKey(remote address) -> conn
	bySource map[netip.Addr]int
	closed   bool
}

func newConnListener(l net.Listener, cfg Config) *connListener {
	return &connListener{
		Listener: l, max: cfg.MaxConns, maxPerSource: cfg.MaxConnsPerSource,
		setupTimeout: cfg.SetupTimeout, log: cfg.Logger,
		conns:    make(map[*deadlineConn]struct{}),
		byRemote: make(map[string]*deadlineConn),
		bySource: make(map[netip.Addr]int),
	}
}

// Accept returns the next connection; it only fails once the listener is closed.
func (l *connListener) Accept() (net.Conn, error) {
	backoff := 5 * time.Millisecond
	for {
		conn, err := l.Listener.Accept()
		if err != nil {
			if l.isClosed() || errors.Is(err, net.ErrClosed) {
				return nil, err
			}
			l.log.Warn("turn: accept failed, retrying", "err", err)
			time.Sleep(backoff)
			backoff = min(2*backoff, maxAcceptBackoff)

			continue
		}
		backoff = 5 * time.Millisecond
		if dc := l.track(conn); dc != nil {
			return dc, nil
		}
	}
}

// track registers conn, or closes it if the listener is closed or full.
func (l *connListener) track(conn net.Conn) *deadlineConn {
	src := sourceKey(conn.RemoteAddr())
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || len(l.conns) >= l.max || l.bySource[src] >= l.maxPerSource {
		_ = conn.Close()
		if !l.closed {
			l.log.Debug("turn: connection limit reached, closing new connection", "remote", conn.RemoteAddr().String())
		}

		return nil
	}
	dc := &deadlineConn{Conn: conn, untrack: l.untrack, source: src, remote: addrKey(conn.RemoteAddr())}
	dc.setupDeadline = time.Now().Add(l.setupTimeout)
	l.conns[dc] = struct{}{}
	l.byRemote[dc.remote] = dc
	l.bySource[src]++
	// Arm the deadline now: pion may not call Read before the TLS
	// handshake starts, and a conn never read must still expire.
	_ = conn.SetReadDeadline(dc.setupDeadline)

	return dc
}

func (l *connListener) untrack(dc *deadlineConn) {
	l.mu.Lock()
	delete(l.conns, dc)
	if l.byRemote[dc.remote] == dc {
		delete(l.byRemote, dc.remote)
	}
	decrement(l.bySource, dc.source)
	l.mu.Unlock()
}

// allocated marks the connection from remote (if it is one of ours) as
// carrying an allocation: from now on only the idle timeout applies.
func (l *connListener) allocated(remote net.Addr) {
	if remote == nil {
		return
	}
	l.mu.Lock()
	dc := l.byRemote[addrKey(remote)] // "tcp/ip:port": a UDP client on the same port does not match
	l.mu.Unlock()
	if dc != nil {
		dc.markAllocated()
	}
}

func (l *connListener) isClosed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()

	return l.closed
}

// Close stops accepting and closes all accepted connections.
func (l *connListener) Close() error {
	l.mu.Lock()
	l.closed = true
	conns := make([]*deadlineConn, 0, len(l.conns))
	for dc := range l.conns {
		conns = append(conns, dc)
	}
	l.mu.Unlock()

	err := l.Listener.Close()
	for _, dc := range conns {
		_ = dc.Close()
	}

	return err
}

func (l *connListener) connCount() int {
	l.mu.Lock()
	defer l.mu.Unlock()

	return len(l.conns)
}

// deadlineConn applies read and write deadlines to every operation. Until
// the connection carries an allocation its reads end at setupDeadline, a
// fixed time after accept, however much the client sends; afterwards each
// read may wait idleTimeout.
type deadlineConn struct {
	net.Conn
	untrack       func(*deadlineConn)
	source        netip.Addr
	remote        string
	setupDeadline time.Time

	mu        sync.Mutex // orders the allocated flag with SetReadDeadline
	allocated bool
	once      sync.Once
}

// armRead sets the deadline for the next read.
func (c *deadlineConn) armRead() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	deadline := c.setupDeadline
	if c.allocated {
		deadline = time.Now().Add(idleTimeout)
	}

	return c.Conn.SetReadDeadline(deadline)
}

// markAllocated lifts the setup deadline, also for a read already waiting.
func (c *deadlineConn) markAllocated() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.allocated {
		return
	}
	c.allocated = true
	_ = c.Conn.SetReadDeadline(time.Now().Add(idleTimeout))
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if err := c.armRead(); err != nil {
		return 0, err
	}

	return c.Conn.Read(p)
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return 0, err
	}

	return c.Conn.Write(p)
}

func (c *deadlineConn) Close() error {
	c.once.Do(func() { c.untrack(c) })

	return c.Conn.Close()
}
