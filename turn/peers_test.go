package turn

import (
	"errors"
	"net"
	"net/netip"
	"testing"
)

func TestPeerFilter(t *testing.T) {
	sfu := netip.MustParseAddrPort("127.0.0.1:5000")
	public := netip.MustParseAddrPort("198.51.99.7:5000") // not special-purpose
	match := func(ap netip.AddrPort) bool {
		// A sloppy predicate: everything on port 7000 or port 0.
		return ap.Port() == 7000 || ap.Port() == 0
	}
	f, err := newPeerFilter([]netip.AddrPort{sfu, public}, match)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		addr      string
		allow, ip bool // allow(addr), allowIP(addr's IP)
	}{
		{"127.0.0.1:5000", true, true},
		{"[::ffff:127.0.0.1]:5000", true, true},
		{"127.0.0.1:5001", false, true},
		{"[::ffff:127.0.0.1]:5001", false, true},
		{"127.0.0.2:5000", false, false},
		{"[::1]:5000", false, false},
		{"0.0.0.0:5000", false, false},
		{"0.1.2.3:5000", false, false},
		{"[::]:5000", false, false},
		{"[::ffff:0.0.0.0]:5000", false, false},
		{"10.0.0.1:7000", false, false},
		{"[::ffff:10.0.0.1]:7000", false, false},
		{"172.16.0.1:7000", false, false},
		{"192.168.0.1:7000", false, false},
		{"169.254.169.254:7000", false, false},
		{"[::ffff:169.254.169.254]:7000", false, false},
		{"100.64.0.1:7000", false, false},
		{"224.0.0.1:7000", false, false},
		{"255.255.255.255:7000", false, false},
		{"[fc00::1]:7000", false, false},
		{"[fe80::1]:7000", false, false},
		{"[fe80::1%eth0]:7000", false, false},
		{"[ff02::1]:7000", false, false},
		{"[64:ff9b::a9fe:a9fe]:7000", false, false}, // NAT64 of 169.254.169.254
		{"[2002:a9fe:a9fe::1]:7000", false, false},  // 6to4 of 169.254.169.254
		{"[::a9fe:a9fe]:7000", false, false},        // IPv4-compatible
		{"198.51.99.7:5000", true, true},
		{"198.51.99.7:5001", false, true},
		{"8.8.8.8:7000", true, true}, // predicate admits public addresses
		{"8.8.8.8:7001", false, true},
		{"8.8.8.8:0", false, true},
		{"[2606:4700::1]:7000", true, true},
	}
	for _, tc := range cases {
		ap := netip.MustParseAddrPort(tc.addr)
		if got := f.allow(ap); got != tc.allow {
			t.Errorf("allow(%s) = %v, want %v", tc.addr, got, tc.allow)
		}
		if got := f.allowIP(ap.Addr()); got != tc.ip {
			t.Errorf("allowIP(%s) = %v, want %v", ap.Addr(), got, tc.ip)
		}
		if got := f.permissionHandler(nil, net.IP(ap.Addr().AsSlice())); got != tc.ip && ap.Addr().Zone() == "" {
			t.Errorf("permissionHandler(%s) = %v, want %v", ap.Addr(), got, tc.ip)
		}
	}
}

func TestPeerFilterExactOnly(t *testing.T) {
	f, err := newPeerFilter([]netip.AddrPort{netip.MustParseAddrPort("[::ffff:192.168.1.10]:5000")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !f.allow(netip.MustParseAddrPort("192.168.1.10:5000")) {
		t.Fatal("mapped allowed peer not normalised")
	}
	if f.allow(netip.MustParseAddrPort("8.8.8.8:5000")) || f.allowIP(netip.MustParseAddr("8.8.8.8")) {
		t.Fatal("unlisted public peer allowed without a predicate")
	}
	if f.permissionHandler(nil, nil) || f.permissionHandler(nil, net.IP{1, 2, 3}) {
		t.Fatal("invalid IP permitted")
	}
	if _, ok := addrPortOf(&net.IPAddr{IP: net.IPv4(8, 8, 8, 8)}); ok {
		t.Fatal("non-UDP address converted")
	}
}

func TestPeerFilterPanickingPredicate(t *testing.T) {
	f, err := newPeerFilter(nil, func(netip.AddrPort) bool { panic("boom") })
	if err != nil {
		t.Fatal(err)
	}
	if f.allow(netip.MustParseAddrPort("8.8.8.8:53")) || f.allowIP(netip.MustParseAddr("8.8.8.8")) {
		t.Fatal("panicking predicate allowed a peer")
	}
}

func TestPeerFilterRejectsBadPeers(t *testing.T) {
	for _, s := range []string{"0.0.0.0:5000", "[::]:5000", "224.0.0.1:5000", "127.0.0.1:0", "255.255.255.255:9", "[::ffff:0.0.0.0]:1"} {
		if _, err := newPeerFilter([]netip.AddrPort{netip.MustParseAddrPort(s)}, nil); !errors.Is(err, errBadPeer) {
			t.Errorf("newPeerFilter(%s): err = %v, want errBadPeer", s, err)
		}
	}
	if _, err := newPeerFilter([]netip.AddrPort{{}}, nil); !errors.Is(err, errBadPeer) {
		t.Errorf("zero AddrPort: err = %v", err)
	}
	if _, err := newPeerFilter(nil, nil); !errors.Is(err, errNoPeers) {
		t.Errorf("no peers: err = %v", err)
	}
}
