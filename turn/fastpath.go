package turn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
)

// The fast path relays ChannelData between a UDP client and a peer it has
// bound a channel to without going through pion/turn, which allocates and
// formats debug arguments for every relayed packet. pion still does
// everything else (Allocate, Refresh, permissions, ChannelBind, expiry,
// quotas, authentication); the fast path only mirrors the channel bindings
// pion reports through its EventHandler, and relays exactly the packets
// pion would:
//
//   - client → peer: a ChannelData message from a client with a UDP
//     allocation, on a channel bound in it, goes to the channel's peer
//     through the relay socket (pion: handleChannelData);
//   - peer → client: a datagram at a relay socket from a peer bound to a
//     channel goes to the client as ChannelData (pion:
//     Allocation.packetHandler).
//
// The peer filter (Config.AllowedPeers/AllowPeer) holds for every packet,
// as on pion's path. Everything else (STUN messages, Send and Data
// indications, unknown channels, TCP/TLS clients) takes pion's path. A
// binding pion removes (expiry, allocation deleted) is removed here in the
// same call, before pion's lock is released.

// chanHeader is the size of a ChannelData header (RFC 8656 §12.4).
const chanHeader = 4

// chanBinding is one channel of an allocation. exact says the peer is
// listed in Config.AllowedPeers, a fixed set: it is allowed for good and
// needs no check per packet (peers admitted by Config.AllowPeer, which may
// change its mind, are checked on every packet).
type chanBinding struct {
	number uint16
	peer   netip.AddrPort
	exact  bool
}

// fastPath holds the UDP clients whose allocations the fast path serves.
type fastPath struct {
	udp    *net.UDPConn // the UDP listener (nil: no fast path)
	reader *udpReader   // reads udp (pion's listener goroutine)
	relays *relayGenerator

	mu      sync.RWMutex
	clients map[netip.AddrPort]*relayConn // client address -> its relay
}

func newFastPath(udp net.PacketConn, relays *relayGenerator) *fastPath {
	f := &fastPath{relays: relays, clients: make(map[netip.AddrPort]*relayConn)}
	f.udp, _ = udp.(*net.UDPConn)
	if f.udp != nil {
		f.reader = newUDPReader(f.udp)
	}

	return f
}

// allocationCreated registers a UDP client's allocation (pion's
// OnAllocationCreated). Allocations over TCP or TLS (a *net.TCPAddr local
// address) stay on pion's path, and so do clients at a link-local IPv6
// address with a zone (the fast path keeps addresses without one).
func (f *fastPath) allocationCreated(src, dst, relay net.Addr) {
	if f.udp == nil {
		return
	}
	if _, ok := dst.(*net.UDPAddr); !ok {
		return
	}
	if ua, ok := src.(*net.UDPAddr); !ok || ua.Zone != "" {
		return
	}
	client, ok := addrPortOf(src)
	rc := f.relays.byAddr(relay)
	if !ok || rc == nil {
		return
	}
	rc.setClient(f.udp, client)
	f.mu.Lock()
	f.clients[client] = rc
	f.mu.Unlock()
}

// allocationDeleted forgets a UDP client's allocation.
func (f *fastPath) allocationDeleted(src, dst net.Addr) {
	if _, ok := dst.(*net.UDPAddr); !ok {
		return
	}
	client, ok := addrPortOf(src)
	if !ok {
		return
	}
	// pion closes the relay before it reports the deletion; an open one
	// belongs to a new allocation from the same address, made in between.
	f.mu.Lock()
	rc := f.clients[client]
	if rc != nil && rc.closed.Load() {
		delete(f.clients, client)
	}
	f.mu.Unlock()
}

// channelCreated and channelDeleted mirror pion's channel bindings on the
// relay socket (any transport: the relay keeps them; only UDP clients use them).
func (f *fastPath) channelCreated(relay, peer net.Addr, number uint16) {
	ap, ok := addrPortOf(peer)
	if rc := f.relays.byAddr(relay); rc != nil && ok {
		rc.bindChannel(number, ap)
	}
}

func (f *fastPath) channelDeleted(relay net.Addr, number uint16) {
	if rc := f.relays.byAddr(relay); rc != nil {
		rc.unbindChannel(number)
	}
}

// relayChannelData relays pkt, read from client, if it is ChannelData on a
// channel the client has bound; it reports whether pkt was handled (relayed
// or dropped by the peer filter). It allocates nothing.
func (f *fastPath) relayChannelData(pkt []byte, client netip.AddrPort) bool {
	// Channel numbers 0x4000-0x7FFF: the first two bits are 01.
	if len(pkt) < chanHeader || pkt[0]&0xC0 != 0x40 {
		return false
	}
	length := int(binary.BigEndian.Uint16(pkt[2:4]))
	if length > len(pkt)-chanHeader {
		return false
	}
	client = normAddrPort(client)
	f.mu.RLock()
	rc := f.clients[client]
	f.mu.RUnlock()
	if rc == nil {
		return false
	}
	b, ok := rc.channelPeer(binary.BigEndian.Uint16(pkt[0:2]))
	if !ok {
		return false
	}
	rc.sendFast(pkt[chanHeader:chanHeader+length], b)

	return true
}

// udpListener is the UDP listener as pion sees it: reads relay bound
// ChannelData on the fast path before pion sees it, and adds the reason
// phrase pion leaves out (reasonPacketConn).
type udpListener struct {
	*net.UDPConn
	fast *fastPath
}

// ReadFrom returns the next packet the fast path did not relay.
func (l udpListener) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, ap, err := l.fast.reader.read(p)
		if err != nil {
			return n, nil, err
		}
		// A packet that fills p may be truncated: pion drops those.
		if n < len(p) && l.fast.relayChannelData(p[:n], ap) {
			continue
		}

		return n, net.UDPAddrFromAddrPort(ap), nil
	}
}

func (l udpListener) WriteTo(p []byte, addr net.Addr) (int, error) {
	return reasonPacketConn{l.UDPConn}.WriteTo(p, addr)
}
