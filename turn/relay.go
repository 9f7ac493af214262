package turn

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
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

	mu    sync.Mutex
	open  int
	conns map[uint16]*relayConn // open relay sockets by port (the fast path's view)

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
	// fastToPeer and fastToClient count the packets the fast path relayed
	// (also counted above).
	fastToPeer, fastToClient atomic.Uint64
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
		conns:  make(map[uint16]*relayConn),

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
	rc := newRelayConn(conn, g)
	if ua, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		rc.port = uint16(ua.Port)
		g.mu.Lock()
		g.conns[rc.port] = rc
		g.mu.Unlock()
	}

	return rc, addr, nil
}

// byAddr returns the open relay socket whose relayed address is addr.
func (g *relayGenerator) byAddr(addr net.Addr) *relayConn {
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()

	return g.conns[uint16(ua.Port)]
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

// closed releases c's slot and forgets it.
func (g *relayGenerator) closed(c *relayConn) {
	g.mu.Lock()
	g.open--
	if c.port != 0 && g.conns[c.port] == c {
		delete(g.conns, c.port)
	}
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
