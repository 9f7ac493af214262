package turn

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

const (
	// firstReadTimeout bounds how long a new TCP/TLS connection may stay
	// silent (TLS handshake, first request).
	firstReadTimeout = 10 * time.Second
	// idleTimeout closes established connections that stay silent longer
	// than an allocation lifetime (10 min default) plus margin; clients
	// refresh permissions every 5 min, so live allocations never hit it.
	idleTimeout = 11 * time.Minute
	// writeTimeout stops a client that does not read from stalling relays.
	writeTimeout     = 10 * time.Second
	maxAcceptBackoff = time.Second
)

// connListener wraps the TCP listener handed to pion. It
//   - caps concurrent connections (excess ones are closed at once),
//   - sets read and write deadlines so idle or stalled clients are dropped,
//   - retries temporary Accept errors (pion stops serving the listener on
//     any Accept error),
//   - closes every accepted connection on Close (pion leaves them open).
type connListener struct {
	net.Listener
	max int
	log *slog.Logger

	mu     sync.Mutex
	conns  map[*deadlineConn]struct{}
	closed bool
}

func newConnListener(l net.Listener, maxConns int, log *slog.Logger) *connListener {
	return &connListener{Listener: l, max: maxConns, log: log, conns: make(map[*deadlineConn]struct{})}
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
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed || len(l.conns) >= l.max {
		_ = conn.Close()
		if !l.closed {
			l.log.Debug("turn: connection limit reached, closing new connection", "remote", conn.RemoteAddr().String())
		}

		return nil
	}
	dc := &deadlineConn{Conn: conn, untrack: l.untrack}
	l.conns[dc] = struct{}{}

	return dc
}

func (l *connListener) untrack(dc *deadlineConn) {
	l.mu.Lock()
	delete(l.conns, dc)
	l.mu.Unlock()
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

// deadlineConn applies read and write deadlines to every operation.
type deadlineConn struct {
	net.Conn
	untrack func(*deadlineConn)

	gotData atomic.Bool
	once    sync.Once
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	timeout := idleTimeout
	if !c.gotData.Load() {
		timeout = firstReadTimeout
	}
	if err := c.Conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return 0, err
	}
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.gotData.Store(true)
	}

	return n, err
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
