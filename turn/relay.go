package turn

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	pturn "github.com/pion/turn/v4"
)

var (
	errPeerNotAllowed  = errors.New("turn: peer not allowed")
	errRelayCapacity   = errors.New("turn: relay capacity reached")
	errPortOutOfRange  = errors.New("turn: requested relay port out of range")
	errTCPRelayUnsupp  = errors.New("turn: TCP relay allocations are not supported")
	errRelaysNotClosed = errors.New("turn: allocations still open after close timeout")
)

// relayGenerator is a pion RelayAddressGenerator that allocates relay sockets
// in a bounded port range, enforces a hard cap on open relays and wraps every
// relay socket so it only talks to allowed peers.
type relayGenerator struct {
	inner  *pturn.RelayAddressGeneratorPortRange
	filter *peerFilter
	log    *slog.Logger
	min    uint16
	max    uint16
	limit  int
	// socketBuffer is each relay socket's SO_RCVBUF/SO_SNDBUF.
	socketBuffer int

	mu   sync.Mutex
	open int

	// relayed counts the payload bytes and packets relayed, both ways.
	relayed relayCounters
}

// relayCounters are shared by every relay socket; one atomic add per
// packet, no allocation.
type relayCounters struct {
	toPeerBytes, toPeerPackets     atomic.Uint64
	fromPeerBytes, fromPeerPackets atomic.Uint64
	denied                         atomic.Uint64 // packets to or from peers not allowed
	allocations                    atomic.Uint64 // relay sockets ever allocated
}

func newRelayGenerator(cfg Config, filter *peerFilter) (*relayGenerator, error) {
	inner := &pturn.RelayAddressGeneratorPortRange{
		RelayAddress: cfg.RelayIP,
		Address:      bindAddress(cfg.RelayIP),
		MinPort:      cfg.RelayPortMin,
		MaxPort:      cfg.RelayPortMax,
		MaxRetries:   32,
	}
	// Validate fills in Net and Rand; run it once here rather than from
	// pion, which calls Validate once per listener.
	if err := inner.Validate(); err != nil {
		return nil, fmt.Errorf("turn: relay address generator: %w", err)
	}

	return &relayGenerator{
		inner:  inner,
		filter: filter,
		log:    cfg.Logger,
		min:    cfg.RelayPortMin,
		max:    cfg.RelayPortMax,
		limit:  cfg.MaxAllocations,

		socketBuffer: cfg.RelayBuffer,
	}, nil
}

// bindAddress is where relay sockets are bound: the relay IP itself when it
// is one of this host's addresses, so relayed packets leave from the address
// the client was told (peers then see the relayed candidate, not a
// peer-reflexive one); otherwise (a public IP behind 1:1 NAT) every address.
func bindAddress(relayIP net.IP) string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.Equal(relayIP) {
				return relayIP.String()
			}
		}
	}
	return "0.0.0.0"
}

// Validate implements pturn.RelayAddressGenerator.
func (g *relayGenerator) Validate() error { return nil }

// AllocatePacketConn implements pturn.RelayAddressGenerator.
func (g *relayGenerator) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	if requestedPort != 0 && (requestedPort < int(g.min) || requestedPort > int(g.max)) {
		return nil, nil, fmt.Errorf("%w: %d", errPortOutOfRange, requestedPort)
	}
	if !g.reserve() {
		return nil, nil, errRelayCapacity
	}
	conn, addr, err := g.inner.AllocatePacketConn(network, requestedPort)
	if err != nil {
		g.release()

		return nil, nil, fmt.Errorf("turn: allocating relay socket: %w", err)
	}

	g.relayed.allocations.Add(1)
	return newRelayConn(conn, g), addr, nil
}

// AllocateConn implements pturn.RelayAddressGenerator (RFC 6062 TCP relays,
// which pion/turn v4 does not implement).
func (g *relayGenerator) AllocateConn(string, int) (net.Conn, net.Addr, error) {
	return nil, nil, errTCPRelayUnsupp
}

func (g *relayGenerator) reserve() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.open >= g.limit {
		return false
	}
	g.open++

	return true
}

func (g *relayGenerator) release() {
	g.mu.Lock()
	g.open--
	g.mu.Unlock()
}

func (g *relayGenerator) openRelays() int {
	g.mu.Lock()
	defer g.mu.Unlock()

	return g.open
}

// waitUntil polls cond every 5 ms until it holds or timeout passes.
func waitUntil(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}

	return true
}

// relayConn is a relay socket that only exchanges packets with allowed
// peers. Writes to other peers fail with errPeerNotAllowed (pion logs and
// drops them); packets from other peers are discarded (returning an error
// from ReadFrom would make pion delete the allocation).
//
// On the relay path it allocates nothing per packet: a *net.UDPConn is
// written and read with netip.AddrPort, and ReadFrom hands pion the same
// *net.UDPAddr for as long as packets come from the same peer (a relay
// talks to one SFU endpoint; pion only reads the address it is given).
type relayConn struct {
	net.PacketConn
	udp     *net.UDPConn // PacketConn when it is one, else nil
	filter  *peerFilter
	log     *slog.Logger
	release func()
	once    sync.Once
	n       *relayCounters
	// last is the peer of the last packet read and its net.Addr form.
	last atomic.Pointer[peerAddr]
}

type peerAddr struct {
	ap   netip.AddrPort
	addr *net.UDPAddr
}

func newRelayConn(conn net.PacketConn, g *relayGenerator) *relayConn {
	c := &relayConn{PacketConn: conn, filter: g.filter, log: g.log, release: g.release, n: &g.relayed}
	c.udp, _ = conn.(*net.UDPConn)
	if c.udp != nil && g.socketBuffer > 0 {
		_ = c.udp.SetReadBuffer(g.socketBuffer)
		_ = c.udp.SetWriteBuffer(g.socketBuffer)
	}
	return c
}

// WriteTo sends p to addr if addr is an allowed peer.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ap, ok := addrPortOf(addr)
	if !ok || !c.filter.allow(ap) {
		c.n.denied.Add(1)
		c.log.Debug("turn: dropped relay packet to disallowed peer", "peer", fmt.Sprint(addr))

		return 0, fmt.Errorf("%w: %v", errPeerNotAllowed, addr)
	}
	var n int
	var err error
	if c.udp != nil {
		n, err = c.udp.WriteToUDPAddrPort(p, ap)
	} else {
		n, err = c.PacketConn.WriteTo(p, net.UDPAddrFromAddrPort(ap))
	}
	if n > 0 {
		c.n.toPeerBytes.Add(uint64(n))
		c.n.toPeerPackets.Add(1)
	}

	return n, err
}

// ReadFrom returns the next packet from an allowed peer.
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.udp == nil {
		return c.readFromAddr(p)
	}
	for {
		n, ap, err := c.udp.ReadFromUDPAddrPort(p)
		if err != nil {
			return n, nil, err
		}
		ap = normAddrPort(ap)
		if c.filter.allow(ap) {
			c.n.fromPeerBytes.Add(uint64(n))
			c.n.fromPeerPackets.Add(1)

			return n, c.addrOf(ap), nil
		}
		c.n.denied.Add(1)
		c.log.Debug("turn: dropped relay packet from disallowed peer", "peer", ap.String())
	}
}

// addrOf returns ap as a *net.UDPAddr, reusing the last one when the peer
// is the same (the returned address must not be modified).
func (c *relayConn) addrOf(ap netip.AddrPort) net.Addr {
	if l := c.last.Load(); l != nil && l.ap == ap {
		return l.addr
	}
	l := &peerAddr{ap: ap, addr: net.UDPAddrFromAddrPort(ap)}
	c.last.Store(l)

	return l.addr
}

func (c *relayConn) readFromAddr(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := c.PacketConn.ReadFrom(p)
		if err != nil {
			return n, addr, err
		}
		if ap, ok := addrPortOf(addr); ok && c.filter.allow(ap) {
			c.n.fromPeerBytes.Add(uint64(n))
			c.n.fromPeerPackets.Add(1)

			return n, addr, nil
		}
		c.n.denied.Add(1)
		c.log.Debug("turn: dropped relay packet from disallowed peer", "peer", fmt.Sprint(addr))
	}
}

// Close closes the socket and releases its slot once.
func (c *relayConn) Close() error {
	err := c.PacketConn.Close()
	c.once.Do(c.release)

	return err
}
