package turn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// quietWindow is how long a blocked destination must stay silent.
const quietWindow = 300 * time.Millisecond

func TestRelayRestrictedToAllowedPeer(t *testing.T) {
	sfu := startEcho(t)   // the only allowed peer
	other := startEcho(t) // loopback service on another port
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, nil)
	user, pass := Credentials(testSecret, "mallory", time.Hour, time.Now())
	client := udpClient(t, srv, user, pass)
	relay := allocate(t, client)

	roundTrip(t, relay, sfu.udpAddr(), "to the sfu")

	// No permission may be created for these IPs.
	for _, addr := range []string{
		"10.0.0.1:3478", "169.254.169.254:80", "0.0.0.0:" + port(sfu), "0.0.0.0:" + port(other),
		"[::1]:" + port(sfu), "[::]:" + port(sfu), "192.168.1.1:53", "[fe80::1]:53", "224.0.0.1:5004",
		"[::ffff:10.0.0.1]:3478", "[::ffff:169.254.169.254]:80", "8.8.8.8:53",
	} {
		peer := net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr))
		if err := client.CreatePermission(peer); err == nil {
			t.Errorf("CreatePermission(%s) succeeded", addr)
		}
		if _, err := relay.WriteTo([]byte("x"), peer); err == nil {
			t.Errorf("relay WriteTo(%s) succeeded", addr)
		}
	}

	// Same IP as the SFU (so the per-IP permission exists) but another port,
	// plain and IPv4-mapped: packets must be dropped by the relay socket.
	otherPort := other.addrPort().Port()
	for _, addr := range []netip.AddrPort{
		netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), otherPort),
		netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), otherPort),
	} {
		sendFor(t, relay, net.UDPAddrFromAddrPort(addr), quietWindow)
	}
	time.Sleep(quietWindow)
	if n := other.got.Load(); n != 0 {
		t.Fatalf("service on another loopback port received %d packets via the relay", n)
	}
	// The relay still works for the SFU, also when addressed IPv4-mapped.
	roundTrip(t, relay, sfu.udpAddr(), "still works")
	roundTrip(t, relay, net.UDPAddrFromAddrPort(
		netip.AddrPortFrom(netip.MustParseAddr("::ffff:127.0.0.1"), sfu.addrPort().Port())), "mapped")
}

// A non-allowed sender on a permitted IP must not reach the client.
func TestRelayDropsInboundFromOtherPorts(t *testing.T) {
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, nil)
	user, pass := Credentials(testSecret, "eve", time.Hour, time.Now())
	relay := allocate(t, udpClient(t, srv, user, pass))
	roundTrip(t, relay, sfu.udpAddr(), "open permission for 127.0.0.1")

	intruder, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer intruder.Close()
	for range 5 {
		if _, err := intruder.WriteTo([]byte("intrusion"), relay.LocalAddr()); err != nil {
			t.Fatalf("intruder write: %v", err)
		}
	}
	_ = relay.SetReadDeadline(time.Now().Add(quietWindow))
	buf := make([]byte, 1500)
	if n, from, err := relay.ReadFrom(buf); err == nil {
		t.Fatalf("client received %q from %v", buf[:n], from)
	}
	_ = relay.SetReadDeadline(time.Time{})
}

// TestRelayConnFilters runs the relay socket's filter and counters on a
// *net.UDPConn (the allocation-free path pion's generator gives us) and on
// any other net.PacketConn.
func TestRelayConnFilters(t *testing.T) {
	for _, udp := range []bool{true, false} {
		t.Run(fmt.Sprintf("udp=%v", udp), func(t *testing.T) { testRelayConnFilters(t, udp) })
	}
}

func testRelayConnFilters(t *testing.T, udp bool) {
	allowed := startEcho(t)
	blocked := startEcho(t)
	filter, err := newPeerFilter([]netip.AddrPort{allowed.addrPort()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	released := 0
	counts := &relayCounters{}
	conn := raw
	if !udp {
		conn = struct{ net.PacketConn }{raw} // not a *net.UDPConn
	}
	rc := wrapRelay(conn, filter, testLogger(), counts)
	rc.release = func() { released++ }
	defer rc.Close()

	if _, err := rc.WriteTo([]byte("x"), blocked.udpAddr()); !errors.Is(err, errPeerNotAllowed) {
		t.Fatalf("WriteTo blocked peer: err = %v, want errPeerNotAllowed", err)
	}
	if _, err := rc.WriteTo([]byte("x"), nil); !errors.Is(err, errPeerNotAllowed) {
		t.Fatalf("WriteTo nil: err = %v", err)
	}
	// A packet from the blocked echo (sent directly) is skipped; the echo of
	// a packet to the allowed peer is returned.
	if _, err := blocked.conn.WriteTo([]byte("from blocked"), raw.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if _, err := rc.WriteTo([]byte("from allowed"), allowed.udpAddr()); err != nil {
		t.Fatalf("WriteTo allowed peer: %v", err)
	}
	_ = rc.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 100)
	n, from, err := rc.ReadFrom(buf)
	if err != nil || string(buf[:n]) != "from allowed" {
		t.Fatalf("ReadFrom = %q from %v, %v; want the allowed echo", buf[:n], from, err)
	}
	if blocked.got.Load() != 0 {
		t.Fatal("blocked peer received a packet")
	}
	if ap, ok := addrPortOf(from); !ok || ap != allowed.addrPort() {
		t.Fatalf("ReadFrom address %v, want %v", from, allowed.addrPort())
	}
	if udp { // the same peer again: the same *net.UDPAddr, not a new one
		if _, err := rc.WriteTo([]byte("from allowed"), allowed.udpAddr()); err != nil {
			t.Fatal(err)
		}
		_, from2, err := rc.ReadFrom(buf)
		if err != nil || from2 != from {
			t.Fatalf("second ReadFrom: %v (%p, first %p)", err, from2, from)
		}
	}
	// Counted for the metrics: one packet each way with the allowed peer
	// (two with udp); two writes refused and one packet from the blocked
	// peer dropped.
	got := [5]uint64{counts.toPeerPackets.Load(), counts.toPeerBytes.Load(), counts.fromPeerPackets.Load(),
		counts.fromPeerBytes.Load(), counts.denied.Load()}
	want := [5]uint64{1, 12, 1, 12, 3}
	if udp {
		want = [5]uint64{2, 24, 2, 24, 3}
	}
	if got != want {
		t.Errorf("counters (to peer packets, bytes, from peer packets, bytes, denied) = %v, want %v", got, want)
	}
	_ = rc.Close()
	_ = rc.Close()
	if released != 1 {
		t.Fatalf("release called %d times, want 1", released)
	}
}

func TestRelayCapacity(t *testing.T) {
	filter, err := newPeerFilter([]netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:9")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := newRelayGenerator(Config{
		RelayIP: net.IPv4(127, 0, 0, 1), RelayPortMin: 40000, RelayPortMax: 40999,
		MaxAllocations: 1, Logger: testLogger(),
	}, filter)
	if err != nil {
		t.Fatal(err)
	}
	conn, addr, err := g.AllocatePacketConn("udp4", 0)
	if err != nil {
		t.Fatalf("first relay: %v", err)
	}
	if p := addr.(*net.UDPAddr).Port; p < 40000 || p > 40999 {
		t.Fatalf("relay port %d out of range", p)
	}
	if _, _, err := g.AllocatePacketConn("udp4", 0); !errors.Is(err, errRelayCapacity) {
		t.Fatalf("second relay: err = %v, want errRelayCapacity", err)
	}
	if _, _, err := g.AllocatePacketConn("udp4", 80); !errors.Is(err, errPortOutOfRange) {
		t.Fatalf("requested port 80: err = %v, want errPortOutOfRange", err)
	}
	_ = conn.Close()
	if !waitUntil(time.Second, func() bool { return g.openRelays() == 0 }) {
		t.Fatalf("%d relays open after Close, want 0", g.openRelays())
	}
}

func port(e *echo) string {
	return strconv.Itoa(int(e.addrPort().Port()))
}

// sendFor writes to peer through relay repeatedly for d, so both Send
// indications and (once bound) ChannelData are exercised.
func sendFor(t *testing.T, relay net.PacketConn, peer net.Addr, d time.Duration) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if _, err := relay.WriteTo([]byte("probe"), peer); err != nil {
			t.Fatalf("relay WriteTo %v: %v", peer, err)
		}
	}
}
