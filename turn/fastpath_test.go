package turn

import (
	"bytes"
	"encoding/binary"
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// apEcho is an echo peer that allocates nothing per packet.
type apEcho struct {
	conn *net.UDPConn
	got  atomic.Int64
	wg   sync.WaitGroup
}

func startAPEcho(t testing.TB) *apEcho {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	e := &apEcho{conn: conn}
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		buf := make([]byte, 1600)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			e.got.Add(1)
			_, _ = conn.WriteToUDPAddrPort(buf[:n], from)
		}
	}()
	t.Cleanup(func() { _ = conn.Close(); e.wg.Wait() })
	return e
}

func (e *apEcho) addrPort() netip.AddrPort { return e.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

// peerAttr is an XOR-PEER-ADDRESS.
type peerAttr netip.AddrPort

func (a peerAttr) AddTo(m *stun.Message) error {
	ap := netip.AddrPort(a)
	return (&stun.XORMappedAddress{IP: ap.Addr().AsSlice(), Port: int(ap.Port())}).AddToAs(m, stun.AttrXORPeerAddress)
}

// chanClient is a hand-rolled UDP client with an allocation.
type chanClient struct {
	*rawClient
	udp   *net.UDPConn
	srv   netip.AddrPort
	relay netip.AddrPort // the relayed address
}

func newChanClient(t *testing.T, srv *Server) *chanClient {
	t.Helper()
	return newChanClientOn(t, "udp4", "127.0.0.1:0", srv.UDPAddr().AddrPort())
}

// newChanClientOn allocates from a socket on laddr through server.
func newChanClientOn(t *testing.T, network, laddr string, server netip.AddrPort) *chanClient {
	t.Helper()
	user, pass := Credentials(testSecret, "fast", time.Hour, time.Now())
	r := newRawClientOn(t, network, laddr, net.UDPAddrFromAddrPort(server), user, pass)
	res := r.request(stun.NewType(stun.MethodAllocate, stun.ClassRequest), true, requestedUDP{})
	var relayed stun.XORMappedAddress
	if res.Type.Class != stun.ClassSuccessResponse || relayed.GetFromAs(res, stun.AttrXORRelayedAddress) != nil {
		t.Fatalf("Allocate: %v", res)
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	return &chanClient{rawClient: r, udp: r.conn.(*net.UDPConn), srv: server,
		relay: netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port))}
}

func (c *chanClient) bind(ch uint16, peer netip.AddrPort) *stun.Message {
	c.t.Helper()
	return c.request(stun.NewType(stun.MethodChannelBind, stun.ClassRequest), true, peerAttr(peer), channelNumber(ch))
}

// frame builds ChannelData into buf.
func frame(buf []byte, ch uint16, payload []byte) []byte {
	binary.BigEndian.PutUint16(buf, ch)
	binary.BigEndian.PutUint16(buf[2:], uint16(len(payload)))
	return append(buf[:4], payload...)
}

// recv reads one datagram from the server within d (ok false on timeout).
func (c *chanClient) recv(buf []byte, d time.Duration) ([]byte, bool) {
	_ = c.udp.SetReadDeadline(time.Now().Add(d))
	n, _, err := c.udp.ReadFromUDPAddrPort(buf)
	if err != nil {
		return nil, false
	}
	return buf[:n], true
}

// Relayed ChannelData arrives intact both ways, on the fast path: payloads
// of every length class (not multiples of 4, 1 byte, a full 1,500-byte
// video packet), padded to 4 bytes towards the client as pion pads.
func TestFastPathChannelDataIntact(t *testing.T) {
	peer := startAPEcho(t)
	srv := startServer(t, []netip.AddrPort{peer.addrPort()}, nil)
	testChannelDataIntact(t, srv, peer, newChanClient(t, srv))
}

// The same through a dual-stack listener (the default ":3478": an AF_INET6
// socket), from an IPv4 client (seen as ::ffff:127.0.0.1) and from an IPv6
// one.
func TestFastPathDualStackListener(t *testing.T) {
	if c, err := net.ListenPacket("udp6", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		_ = c.Close()
	}
	for _, tc := range []struct{ network, laddr, server string }{
		{"udp4", "127.0.0.1:0", "127.0.0.1"},
		{"udp6", "[::1]:0", "::1"},
	} {
		t.Run(tc.network, func(t *testing.T) {
			peer := startAPEcho(t)
			srv := startServer(t, []netip.AddrPort{peer.addrPort()}, func(c *Config) { c.ListenAddr = ":0" })
			if srv.fast.reader == nil || srv.fast.udp == nil {
				t.Fatal("no fast path on the dual-stack listener")
			}
			server := netip.AddrPortFrom(netip.MustParseAddr(tc.server), uint16(srv.UDPAddr().Port))
			testChannelDataIntact(t, srv, peer, newChanClientOn(t, tc.network, tc.laddr, server))
		})
	}
}

func testChannelDataIntact(t *testing.T, srv *Server, peer *apEcho, c *chanClient) {
	t.Helper()
	if res := c.bind(0x4000, peer.addrPort()); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("ChannelBind: %v", res.Type)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	out, in := make([]byte, 1600), make([]byte, 1600)
	const packets = 300
	for i := range packets {
		payload := make([]byte, 1+(i*37)%1500)
		for j := range payload {
			payload[j] = byte(rng.Uint32())
		}
		if _, err := c.udp.WriteToUDPAddrPort(frame(out, 0x4000, payload), c.srv); err != nil {
			t.Fatal(err)
		}
		got, ok := c.recv(in, 2*time.Second)
		if !ok {
			t.Fatalf("packet %d (%d bytes): no echo", i, len(payload))
		}
		want := (4 + len(payload) + 3) &^ 3
		if len(got) != want || binary.BigEndian.Uint16(got) != 0x4000 ||
			int(binary.BigEndian.Uint16(got[2:])) != len(payload) ||
			!bytes.Equal(got[4:4+len(payload)], payload) || bytes.IndexFunc(got[4+len(payload):], func(r rune) bool { return r != 0 }) >= 0 {
			t.Fatalf("packet %d: got %d bytes % x..., want ChannelData 0x4000 of %d bytes padded to %d", i, len(got), got[:min(8, len(got))], len(payload), want)
		}
	}
	// The counters are bumped after sendto returns, which may be after
	// the client has read the packet.
	n := &srv.relays.relayed
	eventually(t, "the fast path counters", func() bool {
		return n.fastToPeer.Load() == packets && n.fastToClient.Load() == packets
	})
	if st := srv.Stats(); st.ToPeerPackets != packets || st.FromPeerPackets != packets {
		t.Fatalf("Stats = %+v, want %d packets each way", st, packets)
	}
}

// The fast path relays no more than pion would: the peer filter holds per
// port both ways, unbound channels and clients without an allocation get
// nothing through.
func TestFastPathEnforcesPeers(t *testing.T) {
	peer := startAPEcho(t)
	other := startAPEcho(t) // same IP as the peer, another port: not allowed
	srv := startServer(t, []netip.AddrPort{peer.addrPort()}, nil)
	c := newChanClient(t, srv)
	if res := c.bind(0x4000, peer.addrPort()); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("ChannelBind: %v", res.Type)
	}
	// pion grants a channel to other: permissions are per IP.
	if res := c.bind(0x4001, other.addrPort()); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("ChannelBind other: %v", res.Type)
	}
	stranger, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer stranger.Close()
	buf, in := make([]byte, 64), make([]byte, 1600)
	for range 20 {
		_, _ = c.udp.WriteToUDPAddrPort(frame(buf, 0x4001, []byte("to other")), c.srv)
		_, _ = c.udp.WriteToUDPAddrPort(frame(buf, 0x4fff, []byte("unbound")), c.srv)
		_, _ = stranger.WriteToUDPAddrPort(frame(buf, 0x4000, []byte("no allocation")), c.srv)
		_, _ = other.conn.WriteToUDPAddrPort([]byte("from other"), c.relay)
	}
	// 20 ChannelData to other and 20 datagrams from it are denied.
	eventually(t, "40 denied packets", func() bool { return srv.Stats().Denied == 40 })
	if got, ok := c.recv(in, quietWindow); ok {
		t.Fatalf("client received % x", got[:min(16, len(got))])
	}
	if n := other.got.Load(); n != 0 {
		t.Fatalf("disallowed port received %d packets", n)
	}
	if n := peer.got.Load(); n != 0 {
		t.Fatalf("peer received %d packets from unbound channels or strangers", n)
	}
	if d := srv.Stats().Denied; d != 40 {
		t.Fatalf("Denied = %d, want 40", d)
	}
	// The bound, allowed channel works.
	_, _ = c.udp.WriteToUDPAddrPort(frame(buf, 0x4000, []byte("ok")), c.srv)
	if got, ok := c.recv(in, 2*time.Second); !ok || string(got[4:6]) != "ok" {
		t.Fatalf("no echo through channel 0x4000: %q", got)
	}
}

// When pion expires a channel the fast path stops using it at once:
// ChannelData on it is dropped and the peer's packets reach the client as
// pion's Data indications (the permission outlives the channel); a new
// binding brings the fast path back, and a deleted allocation leaves
// nothing behind.
func TestFastPathChannelExpiry(t *testing.T) {
	peer := startAPEcho(t)
	// A 1 s channel lifetime: long enough for the first exchange even on
	// a loaded machine, short enough for the test.
	srv := startServer(t, []netip.AddrPort{peer.addrPort()}, func(c *Config) { c.channelLifetime = time.Second })
	c := newChanClient(t, srv)
	if res := c.bind(0x4000, peer.addrPort()); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("ChannelBind: %v", res.Type)
	}
	rc := srv.relays.byAddr(net.UDPAddrFromAddrPort(c.relay))
	if rc == nil {
		t.Fatal("relay socket not found by its address")
	}
	buf, in := make([]byte, 64), make([]byte, 1600)
	_, _ = c.udp.WriteToUDPAddrPort(frame(buf, 0x4000, []byte("hi")), c.srv)
	if _, ok := c.recv(in, 2*time.Second); !ok {
		t.Fatal("no echo before expiry")
	}
	eventually(t, "the channel to expire", func() bool { _, ok := rc.channelPeer(0x4000); return !ok })
	sent := peer.got.Load()
	_, _ = c.udp.WriteToUDPAddrPort(frame(buf, 0x4000, []byte("expired")), c.srv)
	time.Sleep(quietWindow)
	if n := peer.got.Load(); n != sent {
		t.Fatalf("peer received ChannelData on an expired channel")
	}
	_, _ = peer.conn.WriteToUDPAddrPort([]byte("data"), c.relay)
	got, ok := c.recv(in, 2*time.Second)
	m := &stun.Message{Raw: got}
	if !ok || m.Decode() != nil || m.Type != stun.NewType(stun.MethodData, stun.ClassIndication) {
		t.Fatalf("after expiry the peer's packet came as % x, want a Data indication", got[:min(8, len(got))])
	}
	if res := c.bind(0x4000, peer.addrPort()); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("ChannelBind again: %v", res.Type)
	}
	before := srv.relays.relayed.fastToClient.Load()
	_, _ = c.udp.WriteToUDPAddrPort(frame(buf, 0x4000, []byte("again")), c.srv)
	if got, ok := c.recv(in, 2*time.Second); !ok || string(got[4:9]) != "again" {
		t.Fatalf("no echo after binding again: %q", got)
	}
	eventually(t, "the echo after binding again to take the fast path", func() bool {
		return srv.relays.relayed.fastToClient.Load() == before+1
	})
	// Refresh with lifetime 0 deletes the allocation.
	if res := c.request(stun.NewType(stun.MethodRefresh, stun.ClassRequest), true, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{0, 0, 0, 0}}); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("Refresh(0): %v", res.Type)
	}
	eventually(t, "the fast path to forget the allocation", func() bool {
		srv.fast.mu.RLock()
		defer srv.fast.mu.RUnlock()
		return len(srv.fast.clients) == 0 && rc.closed.Load()
	})
}

// The fast path allocates nothing per relayed packet, either way, the
// server's goroutines included (AllocsPerRun counts the whole process).
func TestFastPathZeroAllocs(t *testing.T) {
	peer := startAPEcho(t)
	srv := startServer(t, []netip.AddrPort{peer.addrPort()}, nil)
	c := newChanClient(t, srv)
	if res := c.bind(0x4000, peer.addrPort()); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("ChannelBind: %v", res.Type)
	}
	out := frame(make([]byte, 1300), 0x4000, make([]byte, 1200))
	in := make([]byte, 1600)
	_ = c.udp.SetReadDeadline(time.Now().Add(time.Minute))
	failed := false
	roundTrip := func() {
		if _, err := c.udp.WriteToUDPAddrPort(out, c.srv); err != nil {
			failed = true
		}
		if _, _, err := c.udp.ReadFromUDPAddrPort(in); err != nil {
			failed = true
		}
	}
	for range 50 {
		roundTrip()
	}
	allocs := testing.AllocsPerRun(500, roundTrip)
	if failed {
		t.Fatal("round trip failed")
	}
	if allocs != 0 {
		t.Fatalf("%v allocations per relayed round trip, want 0", allocs)
	}
}
