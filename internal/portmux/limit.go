package portmux

import (
	"net"
	"net/netip"
	"sync"
)

// Limit wraps ln so that at most perSource connections from one source
// (an IPv4 address or an IPv6 /64) and at most total in all are open at
// once; Accept closes the excess at once and waits for the next. A
// connection counts until its Close.
func Limit(ln net.Listener, perSource, total int) net.Listener {
	return &limitListener{Listener: ln, perSource: perSource, total: total, bySource: map[netip.Addr]int{}}
}

type limitListener struct {
	net.Listener
	perSource, total int

	mu       sync.Mutex
	open     int
	bySource map[netip.Addr]int
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c.RemoteAddr())
		l.mu.Lock()
		ok := l.open < l.total && l.bySource[src] < l.perSource
		if ok {
			l.open++
			l.bySource[src]++
		}
		l.mu.Unlock()
		if ok {
			return &limitedConn{Conn: c, release: func() { l.release(src) }}, nil
		}
		_ = c.Close()
	}
}

func (l *limitListener) release(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.bySource[src]--; l.bySource[src] <= 0 {
		delete(l.bySource, src)
	}
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// sourceOf is the address a limit counts: IPv4, or the IPv6 /64.
func sourceOf(a net.Addr) netip.Addr {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	ip := ap.Addr().Unmap()
	if ip.Is6() {
		p, _ := ip.Prefix(64)
		return p.Addr()
	}
	return ip
}
