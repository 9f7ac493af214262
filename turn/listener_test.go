package turn

import (
	"net"
	"net/netip"
	"testing"
	"time"

	pturn "github.com/pion/turn/v4"
)

func TestMaxConns(t *testing.T) {
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, func(c *Config) { c.MaxConns = 1 })
	first, err := net.Dial("tcp", srv.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	eventually(t, "first connection to be tracked", func() bool { return srv.tcp.connCount() == 1 })

	second, err := net.Dial("tcp", srv.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	_ = second.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := second.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("connection over the limit not closed by the server: %v", err)
	}
	if n := srv.tcp.connCount(); n != 1 {
		t.Fatalf("tracked connections = %d, want 1", n)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)

	return ok && ne.Timeout()
}

// Closing the TCP connection ends its allocation at once (not after the
// allocation lifetime) and frees the user's quota.
func TestTCPDisconnectReleasesAllocation(t *testing.T) {
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, nil)
	user, pass := Credentials(testSecret, "frank", time.Hour, time.Now())
	conn, err := net.Dial("tcp", srv.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(t, pturn.NewSTUNConn(conn), srv.TCPAddr(), user, pass)
	allocate(t, c) // closed at cleanup, which stops the client's refresh timers
	if n, _ := srv.quota.counts("frank"); n != 1 {
		t.Fatalf("quota count = %d, want 1", n)
	}
	c.Close()
	_ = conn.Close()
	eventually(t, "allocation to be deleted", func() bool {
		n, total := srv.quota.counts("frank")

		return srv.AllocationCount() == 0 && n == 0 && total == 0
	})
}
