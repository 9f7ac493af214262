package turn

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
)

// relayConn is a relay socket that only exchanges packets with allowed
// peers. Writes to other peers fail with errPeerNotAllowed (pion logs and
// drops them); packets from other peers are discarded (returning an error
// from ReadFrom would make pion delete the allocation).
//
// On the relay path it allocates nothing per packet: a *net.UDPConn is
// written and read with netip.AddrPort, and ReadFrom hands pion the same
// *net.UDPAddr for as long as packets come from the same peer (a relay
// talks to one SFU endpoint; pion only reads the address it is given).
//
// When its allocation belongs to a UDP client (setClient), ReadFrom sends
// packets from a peer bound to a channel straight to the client as
// ChannelData (see fastPath) and returns only the others to pion.
type relayConn struct {
	net.PacketConn
	udp     *net.UDPConn // PacketConn when it is one, else nil
	port    uint16       // local port (0 if not UDP)
	filter  *peerFilter
	log     *slog.Logger
	release func()
	once    sync.Once
	closed  atomic.Bool
	n       *relayCounters
	// last is the peer of the last packet read and its net.Addr form.
	last atomic.Pointer[peerAddr]

	// The fast path: the UDP client of the allocation (nil: none) and
	// the channels bound in it (copy on write, under chanMu).
	client atomic.Pointer[fastClient]
	chanMu sync.Mutex
	chans  atomic.Pointer[[]chanBinding]
	// buf is ReadFrom's buffer, with room for a ChannelData header before
	// and padding after the payload (pion reads from one goroutine).
	buf []byte
	// reader reads the relay socket (pion's relay goroutine); peerW
	// writes it for the fast path (the UDP listener's goroutine); clientW
	// writes ChannelData to the client (the relay goroutine).
	reader  *udpReader
	peerW   *udpWriter
	clientW *udpWriter
}

type peerAddr struct {
	ap   netip.AddrPort
	addr *net.UDPAddr
}

// fastClient is where the fast path sends ChannelData: the client's
// address, through the UDP listener.
type fastClient struct {
	udp  *net.UDPConn
	addr netip.AddrPort
}

func newRelayConn(conn net.PacketConn, g *relayGenerator) *relayConn {
	c := wrapRelay(conn, g.filter, g.log, &g.relayed)
	c.release = func() { g.closed(c) }
	if c.udp != nil && g.socketBuffer > 0 {
		_ = c.udp.SetReadBuffer(g.socketBuffer)
		_ = c.udp.SetWriteBuffer(g.socketBuffer)
	}
	return c
}

// wrapRelay wraps conn; the caller sets release.
func wrapRelay(conn net.PacketConn, filter *peerFilter, log *slog.Logger, n *relayCounters) *relayConn {
	c := &relayConn{PacketConn: conn, filter: filter, log: log, n: n}
	c.udp, _ = conn.(*net.UDPConn)
	if c.udp != nil {
		c.reader, c.peerW = newUDPReader(c.udp), newUDPWriter(c.udp)
	}
	return c
}

// setClient sets (udp != nil) or clears the UDP client of the allocation.
func (c *relayConn) setClient(udp *net.UDPConn, addr netip.AddrPort) {
	if udp == nil {
		c.client.Store(nil)
		return
	}
	c.client.Store(&fastClient{udp: udp, addr: addr})
}

// bindChannel records channel number -> peer, replacing an older binding
// of the number or the peer (pion allows neither twice).
func (c *relayConn) bindChannel(number uint16, peer netip.AddrPort) {
	c.chanMu.Lock()
	defer c.chanMu.Unlock()
	var next []chanBinding
	if old := c.chans.Load(); old != nil {
		for _, b := range *old {
			if b.number != number && b.peer != peer {
				next = append(next, b)
			}
		}
	}
	next = append(next, chanBinding{number: number, peer: peer, exact: c.filter.exactPeer(peer)})
	c.chans.Store(&next)
}

func (c *relayConn) unbindChannel(number uint16) {
	c.chanMu.Lock()
	defer c.chanMu.Unlock()
	old := c.chans.Load()
	if old == nil {
		return
	}
	next := make([]chanBinding, 0, len(*old))
	for _, b := range *old {
		if b.number != number {
			next = append(next, b)
		}
	}
	c.chans.Store(&next)
}

// channelPeer returns the peer bound to channel number.
func (c *relayConn) channelPeer(number uint16) (chanBinding, bool) {
	if bs := c.chans.Load(); bs != nil {
		for _, b := range *bs {
			if b.number == number {
				return b, true
			}
		}
	}
	return chanBinding{}, false
}

// channelOf returns the channel bound to peer.
func (c *relayConn) channelOf(peer netip.AddrPort) (chanBinding, bool) {
	if bs := c.chans.Load(); bs != nil {
		for _, b := range *bs {
			if b.peer == peer {
				return b, true
			}
		}
	}
	return chanBinding{}, false
}

// WriteTo sends p to addr if addr is an allowed peer.
func (c *relayConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	ap, ok := addrPortOf(addr)
	if !ok {
		c.n.denied.Add(1)
		return 0, fmt.Errorf("%w: %v", errPeerNotAllowed, addr)
	}
	return c.writeToPeer(p, ap)
}

// writeToPeer sends p to ap (normalised) if it is an allowed peer.
func (c *relayConn) writeToPeer(p []byte, ap netip.AddrPort) (int, error) {
	if !c.allowOut(ap) {
		return 0, fmt.Errorf("%w: %v", errPeerNotAllowed, ap)
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

func (c *relayConn) allowOut(ap netip.AddrPort) bool {
	if c.filter.allow(ap) {
		return true
	}
	c.n.denied.Add(1)
	c.log.Debug("turn: dropped relay packet to disallowed peer", "peer", ap.String())
	return false
}

// sendFast is writeToPeer for the fast path: only the UDP listener's
// goroutine calls it, and it allocates nothing.
func (c *relayConn) sendFast(p []byte, b chanBinding) {
	if c.peerW == nil || (!b.exact && !c.allowOut(b.peer)) {
		return
	}
	if err := c.peerW.write(p, b.peer); err != nil {
		c.log.Debug("turn: relaying to peer failed", "err", err)
		return
	}
	c.n.toPeerBytes.Add(uint64(len(p)))
	c.n.toPeerPackets.Add(1)
	c.n.fastToPeer.Add(1)
}

// ReadFrom returns the next packet from an allowed peer that the fast path
// did not relay. Only one goroutine may call it (pion's relay loop).
func (c *relayConn) ReadFrom(p []byte) (int, net.Addr, error) {
	if c.udp == nil {
		return c.readFromAddr(p)
	}
	if len(c.buf) != chanHeader+len(p)+3 {
		c.buf = make([]byte, chanHeader+len(p)+3)
	}
	for {
		// Read as much as pion would (len(p)), after a header's room.
		n, ap, err := c.reader.read(c.buf[chanHeader : chanHeader+len(p)])
		if err != nil {
			return n, nil, err
		}
		ap = normAddrPort(ap)
		b, bound := c.channelOf(ap)
		if !(bound && b.exact) && !c.filter.allow(ap) {
			c.n.denied.Add(1)
			c.log.Debug("turn: dropped relay packet from disallowed peer", "peer", ap.String())
			continue
		}
		c.n.fromPeerBytes.Add(uint64(n))
		c.n.fromPeerPackets.Add(1)
		if bound && c.forward(b.number, n) {
			continue
		}
		copy(p, c.buf[chanHeader:chanHeader+n])

		return n, c.addrOf(ap), nil
	}
}

// forward sends the n bytes in c.buf, read from the peer bound to channel
// number, to the allocation's UDP client (if it has one) as ChannelData.
// It pads the frame to a multiple of 4 bytes, as pion does.
func (c *relayConn) forward(number uint16, n int) bool {
	cl := c.client.Load()
	if cl == nil {
		return false
	}
	frame := c.buf[:(chanHeader+n+3)&^3]
	binary.BigEndian.PutUint16(frame[0:2], number)
	binary.BigEndian.PutUint16(frame[2:4], uint16(n))
	clear(frame[chanHeader+n:])
	if c.clientW == nil || c.clientW.conn != cl.udp {
		c.clientW = newUDPWriter(cl.udp)
	}
	if err := c.clientW.write(frame, cl.addr); err != nil {
		c.log.Debug("turn: sending ChannelData to client failed", "err", err)
	} else {
		c.n.fastToClient.Add(1)
	}

	return true
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
	c.closed.Store(true)
	err := c.PacketConn.Close()
	c.once.Do(c.release)

	return err
}
