package turn

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	pturn "github.com/pion/turn/v4"
	"go.uber.org/goleak"
)

var testSecret = []byte("test-secret-0123456789")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger discards logs unless TURN_TEST_LOG is set.
func testLogger() *slog.Logger {
	if os.Getenv("TURN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: levelTrace}))
	}

	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// startServer starts a server on 127.0.0.1 with RelayIP 127.0.0.1 that may
// relay only to allowed; mutate adjusts the config before New.
func startServer(t testing.TB, allowed []netip.AddrPort, mutate func(*Config)) *Server {
	t.Helper()
	cfg := Config{
		ListenAddr:   "127.0.0.1:0",
		Secret:       testSecret,
		RelayIP:      net.IPv4(127, 0, 0, 1),
		AllowedPeers: allowed,
		Logger:       testLogger(),
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})

	return srv
}

// echo is a UDP server on 127.0.0.1 that echoes every datagram and counts them.
type echo struct {
	conn *net.UDPConn
	got  atomic.Int64
	wg   sync.WaitGroup
}

func startEcho(t testing.TB) *echo {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("echo listen: %v", err)
	}
	e := &echo{conn: conn}
	e.wg.Add(1)
	go e.serve()
	t.Cleanup(func() {
		_ = conn.Close()
		e.wg.Wait()
	})

	return e
}

func (e *echo) serve() {
	defer e.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := e.conn.ReadFromUDP(buf)
		if err != nil {
			return
		}
		e.got.Add(1)
		_, _ = e.conn.WriteToUDP(buf[:n], from)
	}
}

func (e *echo) addrPort() netip.AddrPort {
	return e.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (e *echo) udpAddr() *net.UDPAddr {
	return e.conn.LocalAddr().(*net.UDPAddr)
}

// newClient starts a pion TURN client over conn to server addr.
func newClient(t testing.TB, conn net.PacketConn, server net.Addr, user, pass string) *pturn.Client {
	t.Helper()
	t.Cleanup(func() { _ = conn.Close() })
	c, err := pturn.NewClient(&pturn.ClientConfig{
		STUNServerAddr: server.String(),
		TURNServerAddr: server.String(),
		Username:       user,
		Password:       pass,
		Conn:           conn,
		LoggerFactory:  pionLoggerFactory{log: testLogger()},
	})
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	if err := c.Listen(); err != nil {
		t.Fatalf("client Listen: %v", err)
	}
	t.Cleanup(c.Close)

	return c
}

func udpClient(t testing.TB, srv *Server, user, pass string) *pturn.Client {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("client listen: %v", err)
	}

	return newClient(t, conn, srv.UDPAddr(), user, pass)
}

func tcpClient(t testing.TB, srv *Server, user, pass string) *pturn.Client {
	t.Helper()
	conn, err := net.Dial("tcp", srv.TCPAddr().String())
	if err != nil {
		t.Fatalf("dial tcp: %v", err)
	}

	return newClient(t, pturn.NewSTUNConn(conn), srv.TCPAddr(), user, pass)
}

func tlsClient(t testing.TB, srv *Server, cfg *tls.Config, user, pass string) *pturn.Client {
	t.Helper()
	conn, err := tls.Dial("tcp", srv.TLSAddr().String(), cfg)
	if err != nil {
		t.Fatalf("dial tls: %v", err)
	}

	return newClient(t, pturn.NewSTUNConn(conn), srv.TLSAddr(), user, pass)
}

// allocate allocates a UDP relay and closes it at cleanup.
func allocate(t testing.TB, c *pturn.Client) net.PacketConn {
	t.Helper()
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("Allocate: %v", err)
	}
	t.Cleanup(func() { _ = relay.Close() })

	return relay
}

// turnErrorCode returns the STUN error code carried by err, or 0.
func turnErrorCode(err error) int {
	var te stun.TurnError
	if errors.As(err, &te) {
		return int(te.ErrorCodeAttr.Code)
	}
	var tep *stun.TurnError
	if errors.As(err, &tep) {
		return int(tep.ErrorCodeAttr.Code)
	}

	return 0
}

// turnErrorReason is the reason phrase of a TURN error response ("" if err is not one).
func turnErrorReason(err error) string {
	var te stun.TurnError
	if errors.As(err, &te) {
		return string(te.ErrorCodeAttr.Reason)
	}
	var tep *stun.TurnError
	if errors.As(err, &tep) {
		return string(tep.ErrorCodeAttr.Reason)
	}

	return ""
}

// roundTrip sends msg from relay to peer until the echo comes back.
func roundTrip(t *testing.T, relay net.PacketConn, peer net.Addr, msg string) {
	t.Helper()
	buf := make([]byte, 1500)
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := relay.WriteTo([]byte(msg), peer); err != nil {
			t.Fatalf("relay WriteTo %v: %v", peer, err)
		}
		_ = relay.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := relay.ReadFrom(buf)
		if err != nil {
			continue
		}
		if string(buf[:n]) != msg {
			t.Fatalf("echo payload = %q from %v, want %q", buf[:n], from, msg)
		}

		return
	}
	t.Fatalf("no echo from %v through the relay", peer)
}

// eventually polls cond for up to 3 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
