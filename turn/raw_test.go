package turn

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v3"
)

// rawClient speaks TURN by hand so tests can send what pion's client never
// would, e.g. an IPv4-mapped peer address in an IPv6-family XOR-PEER-ADDRESS.
type rawClient struct {
	t      *testing.T
	conn   net.PacketConn
	server net.Addr
	auth   []stun.Setter // username, realm, nonce, integrity
}

// v6PeerAddr is an XOR-PEER-ADDRESS that is always IPv6-family encoded.
type v6PeerAddr netip.AddrPort

func (a v6PeerAddr) AddTo(m *stun.Message) error {
	const cookie = 0x2112A442
	v := make([]byte, 20)
	v[1] = 0x02 // IPv6 family
	binary.BigEndian.PutUint16(v[2:4], netip.AddrPort(a).Port()^uint16(cookie>>16))
	key := make([]byte, 16)
	binary.BigEndian.PutUint32(key, cookie)
	copy(key[4:], m.TransactionID[:])
	ip := netip.AddrPort(a).Addr().As16()
	for i := range ip {
		v[4+i] = ip[i] ^ key[i]
	}
	m.Add(stun.AttrXORPeerAddress, v)

	return nil
}

func newRawClient(t *testing.T, srv *Server, user, pass string) *rawClient {
	t.Helper()
	return newRawClientOn(t, "udp4", "127.0.0.1:0", srv.UDPAddr(), user, pass)
}

// newRawClientOn is newRawClient from a socket on laddr to server.
func newRawClientOn(t *testing.T, network, laddr string, server net.Addr, user, pass string) *rawClient {
	t.Helper()
	conn, err := net.ListenPacket(network, laddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	r := &rawClient{t: t, conn: conn, server: server}
	res := r.request(stun.NewType(stun.MethodAllocate, stun.ClassRequest), false, requestedUDP{})
	var nonce stun.Nonce
	var realm stun.Realm
	if nonce.GetFrom(res) != nil || realm.GetFrom(res) != nil {
		t.Fatalf("no nonce/realm in %v", res)
	}
	r.auth = []stun.Setter{stun.NewUsername(user), realm, nonce, stun.NewLongTermIntegrity(user, realm.String(), pass)}

	return r
}

// requestedUDP is REQUESTED-TRANSPORT: UDP.
type requestedUDP struct{}

func (requestedUDP) AddTo(m *stun.Message) error {
	m.Add(stun.AttrRequestedTransport, []byte{17, 0, 0, 0})

	return nil
}

// send builds and sends a message; withAuth appends the credentials.
func (r *rawClient) send(typ stun.MessageType, withAuth bool, attrs ...stun.Setter) *stun.Message {
	r.t.Helper()
	setters := append([]stun.Setter{stun.TransactionID, typ}, attrs...)
	if withAuth {
		setters = append(setters, r.auth...)
	}
	msg, err := stun.Build(append(setters, stun.Fingerprint)...)
	if err != nil {
		r.t.Fatalf("build %v: %v", typ, err)
	}
	if _, err := r.conn.WriteTo(msg.Raw, r.server); err != nil {
		r.t.Fatalf("send %v: %v", typ, err)
	}

	return msg
}

// request sends a request and returns the response with its transaction ID.
func (r *rawClient) request(typ stun.MessageType, withAuth bool, attrs ...stun.Setter) *stun.Message {
	r.t.Helper()
	req := r.send(typ, withAuth, attrs...)
	buf := make([]byte, 1500)
	_ = r.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, _, err := r.conn.ReadFrom(buf)
		if err != nil {
			r.t.Fatalf("no response to %v: %v", typ, err)
		}
		res := &stun.Message{Raw: append([]byte(nil), buf[:n]...)}
		if res.Decode() == nil && res.TransactionID == req.TransactionID {
			return res
		}
	}
}

// A hand-crafted client using IPv6-family, IPv4-mapped peer addresses must
// not get past the peer restrictions (by permission, Send indication or
// ChannelBind + ChannelData).
func TestRawMappedPeerAddresses(t *testing.T) {
	sfu := startEcho(t)
	other := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, nil)
	user, pass := Credentials(testSecret, "raw", time.Hour, time.Now())
	r := newRawClient(t, srv, user, pass)
	if res := r.request(stun.NewType(stun.MethodAllocate, stun.ClassRequest), true, requestedUDP{}); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("Allocate: %v", res)
	}
	mapped := func(ip string, port uint16) v6PeerAddr {
		return v6PeerAddr(netip.AddrPortFrom(netip.MustParseAddr(ip), port))
	}
	createPerm := stun.NewType(stun.MethodCreatePermission, stun.ClassRequest)
	for _, ip := range []string{"::ffff:10.0.0.1", "::ffff:169.254.169.254", "::ffff:0.0.0.0", "::ffff:127.0.0.2", "::1", "::"} {
		if res := r.request(createPerm, true, mapped(ip, 80)); res.Type.Class != stun.ClassErrorResponse {
			t.Errorf("CreatePermission(%s) = %v, want an error response", ip, res.Type)
		}
	}
	if res := r.request(createPerm, true, mapped("::ffff:127.0.0.1", 1)); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("CreatePermission(::ffff:127.0.0.1) = %v, want success (the SFU's IP)", res.Type)
	}

	otherPeer := mapped("::ffff:127.0.0.1", other.addrPort().Port())
	sendInd := stun.NewType(stun.MethodSend, stun.ClassIndication)
	chanBind := stun.NewType(stun.MethodChannelBind, stun.ClassRequest)
	if res := r.request(chanBind, true, otherPeer, channelNumber(0x4000)); res.Type.Class != stun.ClassSuccessResponse {
		t.Fatalf("ChannelBind: %v", res.Type)
	}
	for range 5 {
		r.send(sendInd, false, otherPeer, stun.RawAttribute{Type: stun.AttrData, Value: []byte("probe")})
		channelData(t, r, 0x4000, "probe")
	}
	time.Sleep(quietWindow)
	if n := other.got.Load(); n != 0 {
		t.Fatalf("other loopback port received %d packets", n)
	}
	// The same encoding works for the SFU, so the probes above were processed.
	r.send(sendInd, false, mapped("::ffff:127.0.0.1", sfu.addrPort().Port()), stun.RawAttribute{Type: stun.AttrData, Value: []byte("ok")})
	eventually(t, "the SFU to receive the mapped-address packet", func() bool { return sfu.got.Load() == 1 })
}

type channelNumber uint16

func (c channelNumber) AddTo(m *stun.Message) error {
	m.Add(stun.AttrChannelNumber, []byte{byte(c >> 8), byte(c), 0, 0})

	return nil
}

// channelData sends a ChannelData message on channel ch.
func channelData(t *testing.T, r *rawClient, ch uint16, payload string) {
	t.Helper()
	pkt := make([]byte, 4+len(payload))
	binary.BigEndian.PutUint16(pkt, ch)
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(payload)))
	copy(pkt[4:], payload)
	if _, err := r.conn.WriteTo(pkt, r.server); err != nil {
		t.Fatal(err)
	}
}
