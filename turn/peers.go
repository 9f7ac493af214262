package turn

import (
	"fmt"
	"net"
	"net/netip"
)

// restrictedPrefixes are special-purpose ranges not covered by the netip
// predicates (IsLoopback, IsPrivate, IsLinkLocalUnicast, ...). A relay may
// reach an address in them only if it is listed exactly in AllowedPeers.
var restrictedPrefixes = []netip.Prefix{
	netip.MustParsePrefix("100.64.0.0/10"),   // carrier-grade NAT
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("::/96"),           // IPv4-compatible IPv6 (deprecated)
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64, embeds IPv4
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("2001::/32"),       // Teredo, embeds IPv4
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4, embeds IPv4
	netip.MustParsePrefix("fec0::/10"),       // site-local (deprecated)
}

// normAddr unmaps IPv4-mapped IPv6 and drops any zone, so that every form of
// an address compares equal. netip.Prefix.Contains does not unmap.
func normAddr(ip netip.Addr) netip.Addr {
	return ip.Unmap().WithZone("")
}

func normAddrPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(normAddr(ap.Addr()), ap.Port())
}

// neverReachable reports addresses no relay may ever target, even if listed:
// unspecified (0.0.0.0 and :: reach the local host on Linux), multicast,
// broadcast and the rest of 0.0.0.0/8.
func neverReachable(ip netip.Addr) bool {
	ip = normAddr(ip)

	return !ip.IsValid() || ip.IsUnspecified() || ip.IsMulticast() ||
		ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}) ||
		(ip.Is4() && ip.As4()[0] == 0)
}

// restricted reports special-purpose addresses: loopback, private, link-local,
// and the ranges in restrictedPrefixes (incl. those embedding IPv4).
func restricted(ip netip.Addr) bool {
	ip = normAddr(ip)
	if !ip.IsGlobalUnicast() || ip.IsPrivate() {
		return true // loopback, link-local, multicast, unspecified, 10/8, fc00::/7, ...
	}
	for _, p := range restrictedPrefixes {
		if p.Contains(ip) {
			return true
		}
	}

	return false
}

// peerFilter decides which peers a relay may exchange packets with.
type peerFilter struct {
	exact map[netip.AddrPort]struct{}
	ips   map[netip.Addr]struct{}
	match func(netip.AddrPort) bool
}

func newPeerFilter(exact []netip.AddrPort, match func(netip.AddrPort) bool) (*peerFilter, error) {
	f := &peerFilter{
		exact: make(map[netip.AddrPort]struct{}, len(exact)),
		ips:   make(map[netip.Addr]struct{}, len(exact)),
		match: match,
	}
	for _, ap := range exact {
		n := normAddrPort(ap)
		if !n.IsValid() || n.Port() == 0 || neverReachable(n.Addr()) {
			return nil, fmt.Errorf("%w: %v", errBadPeer, ap)
		}
		f.exact[n] = struct{}{}
		f.ips[n.Addr()] = struct{}{}
	}
	if len(f.exact) == 0 && match == nil {
		return nil, errNoPeers
	}

	return f, nil
}

// allowIP reports whether a client may get a TURN permission for ip, i.e.
// whether some port on ip may be an allowed peer.
func (f *peerFilter) allowIP(ip netip.Addr) bool {
	ip = normAddr(ip)
	if neverReachable(ip) {
		return false
	}
	if _, ok := f.ips[ip]; ok {
		return true
	}

	return !restricted(ip) && f.callMatch(netip.AddrPortFrom(ip, 0))
}

// allow reports whether a relay may send to or receive from ap.
func (f *peerFilter) allow(ap netip.AddrPort) bool {
	ap = normAddrPort(ap)
	if ap.Port() == 0 || neverReachable(ap.Addr()) {
		return false
	}
	if _, ok := f.exact[ap]; ok {
		return true
	}

	return !restricted(ap.Addr()) && f.callMatch(ap)
}

// exactPeer reports whether ap is listed exactly (and so always allowed).
func (f *peerFilter) exactPeer(ap netip.AddrPort) bool {
	ap = normAddrPort(ap)
	if ap.Port() == 0 || neverReachable(ap.Addr()) {
		return false
	}
	_, ok := f.exact[ap]

	return ok
}

// callMatch runs the user predicate; a panic in it denies instead of
// crashing the server.
func (f *peerFilter) callMatch(ap netip.AddrPort) (ok bool) {
	if f.match == nil {
		return false
	}
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()

	return f.match(ap)
}

// permissionHandler adapts the filter to pion's PermissionHandler.
func (f *peerFilter) permissionHandler(_ net.Addr, peerIP net.IP) bool {
	ip, ok := netip.AddrFromSlice(peerIP)

	return ok && f.allowIP(ip)
}

// addrPortOf converts a UDP (or TCP) net.Addr into a netip.AddrPort.
func addrPortOf(addr net.Addr) (netip.AddrPort, bool) {
	switch a := addr.(type) {
	case *net.UDPAddr:
		return ipPort(a.IP, a.Port)
	case *net.TCPAddr:
		return ipPort(a.IP, a.Port)
	default:
		return netip.AddrPort{}, false
	}
}

func ipPort(ip net.IP, port int) (netip.AddrPort, bool) {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port <= 0 || port > 65535 {
		return netip.AddrPort{}, false
	}

	return netip.AddrPortFrom(normAddr(a), uint16(port)), true
}
