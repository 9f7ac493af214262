package turn

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pturn "github.com/pion/turn/v4"
)

// rssMiB returns the resident set of this process (server and clients
// together), or -1 where /proc is missing.
func rssMiB() int {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kib, _ := strconv.Atoi(f[1])

			return kib >> 10
		}
	}

	return -1
}

// tryAllocate allocates a UDP relay from a fresh socket on localIP; it
// returns the STUN error code (0 on success, -1 on other errors) and a
// function that releases everything.
func tryAllocate(srv *Server, localIP, user, pass string) (int, func()) {
	conn, err := net.ListenPacket("udp4", net.JoinHostPort(localIP, "0"))
	if err != nil {
		return -1, func() {}
	}
	c, err := pturn.NewClient(&pturn.ClientConfig{
		STUNServerAddr: srv.UDPAddr().String(),
		TURNServerAddr: srv.UDPAddr().String(),
		Username:       user, Password: pass, Conn: conn,
		LoggerFactory: pionLoggerFactory{log: testLogger()},
	})
	if err != nil {
		_ = conn.Close()

		return -1, func() {}
	}
	release := func() { c.Close(); _ = conn.Close() }
	if err := c.Listen(); err != nil {
		release()

		return -1, func() {}
	}
	relay, err := c.Allocate()
	if err != nil {
		release()
		if code := turnErrorCode(err); code != 0 {
			return code, func() {}
		}

		return -1, func() {}
	}

	return 0, func() { _ = relay.Close(); release() }
}

// 110 made-up names from one address, each trying its full per-name
// quota (1,100 requests against 1,000 allocations), get only the
// per-source quota; a user at another address still allocates.
func TestMadeUpNamesCannotExhaustAllocations(t *testing.T) {
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, nil) // defaults: 10/user, 100/source, 1000 total
	start, rss0 := time.Now(), rssMiB()

	var (
		mu       sync.Mutex
		releases []func()
		ok, quot atomic.Int64
		other    atomic.Int64
	)
	t.Cleanup(func() {
		for _, r := range releases {
			r()
		}
	})
	names := make(chan string)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range names {
				user, pass := Credentials(testSecret, name, time.Hour, time.Now())
				for range DefaultUserQuota {
					code, release := tryAllocate(srv, "127.0.0.1", user, pass)
					mu.Lock()
					releases = append(releases, release)
					mu.Unlock()
					switch code {
					case 0:
						ok.Add(1)
					case codeQuotaReached:
						quot.Add(1)
					default:
						other.Add(1)
					}
				}
			}
		}()
	}
	for i := range 110 {
		names <- fmt.Sprintf("stranger%03d", i)
	}
	close(names)
	wg.Wait()
	t.Logf("1,100 requests from one source in %v: %d allocated, %d refused with 486, %d other errors; RSS %d -> %d MiB",
		time.Since(start).Round(time.Millisecond), ok.Load(), quot.Load(), other.Load(), rss0, rssMiB())
	if ok.Load() != DefaultSourceQuota || quot.Load() != 1100-DefaultSourceQuota {
		t.Fatalf("%d allocated and %d refused; want %d and %d", ok.Load(), quot.Load(),
			DefaultSourceQuota, 1100-DefaultSourceQuota)
	}
	if n := srv.AllocationCount(); n != DefaultSourceQuota {
		t.Fatalf("server holds %d allocations, want %d", n, DefaultSourceQuota)
	}

	// A real user from another address allocates over UDP and TCP.
	user, pass := Credentials(testSecret, "alice", time.Hour, time.Now())
	code, release := tryAllocate(srv, "127.0.0.2", user, pass)
	t.Cleanup(release)
	if code != 0 {
		t.Fatalf("real user's UDP allocation: code %d", code)
	}
	relay := allocate(t, tcpClientFrom(t, srv, "127.0.0.2", user, pass))
	roundTrip(t, relay, sfu.udpAddr(), "hello")
}

// tcpClientFrom is tcpClient with the connection bound to localIP.
func tcpClientFrom(t testing.TB, srv *Server, localIP, user, pass string) *pturn.Client {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}, Timeout: 2 * time.Second}
	conn, err := d.Dial("tcp", srv.TCPAddr().String())
	if err != nil {
		t.Fatalf("dial tcp from %s: %v", localIP, err)
	}

	return newClient(t, pturn.NewSTUNConn(conn), srv.TCPAddr(), user, pass)
}

// stallHeader is the 20-byte header of a STUN Binding request announcing a
// 100-byte body that never comes.
var stallHeader = []byte{0x00, 0x01, 0x00, 0x64, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

// stalledConn is a client connection and when it was opened.
type stalledConn struct {
	net.Conn
	opened time.Time
}

// dialStalled opens n TCP connections from localIP that each send a STUN
// header and stall.
func dialStalled(t *testing.T, srv *Server, localIP string, n int) []stalledConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(localIP)}, Timeout: 2 * time.Second}
	conns := make([]stalledConn, 0, n)
	for range n {
		c, err := d.Dial("tcp", srv.TCPAddr().String())
		if err != nil {
			t.Fatalf("dial from %s: %v", localIP, err)
		}
		_, _ = c.Write(stallHeader) // may fail if the server already refused it
		conns = append(conns, stalledConn{Conn: c, opened: time.Now()})
	}
	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})

	return conns
}

// closedWithin counts the conns the server closed (a read returns EOF or a
// reset) within d of their opening.
func closedWithin(conns []stalledConn, d time.Duration) int {
	closed := atomic.Int64{}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for _, c := range conns {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			// A deadline already past makes Read time out at once, even on
			// a closed connection: on a loaded machine this goroutine may
			// start late, so give it a moment to see the close.
			_ = c.SetReadDeadline(later(c.opened.Add(d), time.Now().Add(100*time.Millisecond)))
			if _, err := c.Read(make([]byte, 64)); err != nil && !isTimeout(err) {
				closed.Add(1)
			}
		}()
	}
	wg.Wait()

	return int(closed.Load())
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func closedAt(c net.Conn, deadline time.Time) bool {
	_ = c.SetReadDeadline(deadline)
	_, err := c.Read(make([]byte, 64))

	return err != nil && !isTimeout(err)
}

// 2,000 connections (the whole TCP cap) that send a STUN header and stall,
// spread over 40 sources so the per-source cap does not refuse them, are
// each closed by the setup timeout; then a real user allocates over TCP,
// and its connection outlives the setup timeout because it carries an
// allocation.
func TestStalledTCPConnsClosedBySetupTimeout(t *testing.T) {
	const setup, margin = 2 * time.Second, 2 * time.Second
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, func(c *Config) { c.SetupTimeout = setup })
	if srv.cfg.MaxConns != 2000 {
		t.Fatalf("MaxConns = %d, want the default 2000", srv.cfg.MaxConns)
	}
	start, rss0 := time.Now(), rssMiB()
	var conns []stalledConn
	for i := range 40 {
		conns = append(conns, dialStalled(t, srv, fmt.Sprintf("127.0.1.%d", i+1), 50)...)
	}
	opened := time.Since(start)
	goroutines := runtime.NumGoroutine()
	// Let the server accept the backlog (until the first ones could expire).
	for srv.tcp.connCount() < 2000 && time.Since(start) < setup*3/4 {
		time.Sleep(10 * time.Millisecond)
	}
	tracked, rssFull := srv.tcp.connCount(), rssMiB()
	if tracked == 2000 {
		// The cap is full: a newcomer is refused for now.
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
		probe, err := d.Dial("tcp", srv.TCPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		if !closedAt(probe, time.Now().Add(setup/2)) {
			t.Fatal("connection over the full cap was not closed at once")
		}
		_ = probe.Close()
	} else {
		t.Logf("only %d tracked at once (a slow machine: accepting lagged behind the setup timeout)", tracked)
	}

	if n := closedWithin(conns, setup+margin); n != len(conns) {
		t.Fatalf("%d of %d stalled connections closed by the server within %v of opening", n, len(conns), setup+margin)
	}
	eventually(t, "the listener to forget them", func() bool { return srv.tcp.connCount() == 0 })
	t.Logf("2,000 stalled conns opened in %v (%d tracked, %d goroutines, RSS %d -> %d MiB, both ends in this process), each closed within %v of opening, all within %v (setup timeout %v)",
		opened.Round(time.Millisecond), tracked, goroutines, rss0, rssFull, setup+margin, time.Since(start).Round(time.Millisecond), setup)

	user, pass := Credentials(testSecret, "alice", time.Hour, time.Now())
	relay := allocate(t, tcpClientFrom(t, srv, "127.0.0.2", user, pass))
	roundTrip(t, relay, sfu.udpAddr(), "before")
	// Past the setup timeout, the allocated connection is still served.
	allocated := time.Now()
	eventually(t, "setup timeout to pass", func() bool { return time.Since(allocated) > setup+200*time.Millisecond })
	if n := srv.tcp.connCount(); n != 1 {
		t.Fatalf("allocated connection dropped: %d tracked", n)
	}
	roundTrip(t, relay, sfu.udpAddr(), "after")
}

// One source cannot hold more than MaxConnsPerSource connections; others
// are served meanwhile.
func TestStalledTCPConnsPerSourceCap(t *testing.T) {
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, nil)
	conns := dialStalled(t, srv, "127.0.0.1", 2000)
	if n := closedWithin(conns[DefaultSourceQuota:], time.Second); n != len(conns)-DefaultSourceQuota {
		t.Fatalf("%d of %d connections over the per-source cap were closed", n, len(conns)-DefaultSourceQuota)
	}
	if n := srv.tcp.connCount(); n != DefaultSourceQuota {
		t.Fatalf("tracked %d connections from one source, want %d", n, DefaultSourceQuota)
	}
	user, pass := Credentials(testSecret, "alice", time.Hour, time.Now())
	relay := allocate(t, tcpClientFrom(t, srv, "127.0.0.2", user, pass))
	roundTrip(t, relay, sfu.udpAddr(), "hi")
}

// Over TLS too: a connection that carries an allocation outlives the setup
// timeout; one that completed the TLS handshake but never allocated does not.
func TestTLSSetupTimeout(t *testing.T) {
	const setup = 500 * time.Millisecond
	serverTLS, clientTLS := selfSigned(t)
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, func(c *Config) {
		c.TLSAddr = "127.0.0.1:0"
		c.TLSConfig = serverTLS
		c.SetupTimeout = setup
	})
	idle, err := tls.Dial("tcp", srv.TLSAddr().String(), clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	user, pass := Credentials(testSecret, "tess", time.Hour, time.Now())
	relay := allocate(t, tlsClient(t, srv, clientTLS, user, pass))
	start := time.Now()
	if !closedAt(idle, start.Add(setup+2*time.Second)) {
		t.Fatal("handshaken TLS connection without an allocation not closed")
	}
	eventually(t, "setup timeout to pass", func() bool { return time.Since(start) > setup+200*time.Millisecond })
	roundTrip(t, relay, sfu.udpAddr(), "still here")
	if n := srv.tls.connCount(); n != 1 {
		t.Fatalf("tracked TLS connections = %d, want 1 (the allocated one)", n)
	}
}
