package turn

import (
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	pturn "github.com/pion/turn/v4"
)

const codeQuotaReached = 486

func TestUserQuota(t *testing.T) {
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, func(c *Config) { c.UserQuota = 2 })
	alice, alicePass := Credentials(testSecret, "alice", time.Hour, time.Now())
	// A second credential for the same user (other expiry) counts too.
	alice2, alice2Pass := Credentials(testSecret, "alice", 2*time.Hour, time.Now())

	first := allocate(t, udpClient(t, srv, alice, alicePass))
	allocate(t, udpClient(t, srv, alice2, alice2Pass))

	_, err := udpClient(t, srv, alice, alicePass).Allocate()
	if code := turnErrorCode(err); code != codeQuotaReached {
		t.Fatalf("third allocation: code %d (%v), want 486", code, err)
	}
	if r := turnErrorReason(err); r != "Allocation Quota Reached" {
		t.Fatalf("486 over UDP with reason %q", r)
	}
	bob, bobPass := Credentials(testSecret, "bob", time.Hour, time.Now())
	allocate(t, udpClient(t, srv, bob, bobPass))

	// Releasing one allocation frees a slot.
	if err := first.Close(); err != nil {
		t.Fatalf("closing allocation: %v", err)
	}
	eventually(t, "alice's allocation to be deleted", func() bool {
		n, _ := srv.quota.counts("alice")

		return n == 1
	})
	allocate(t, udpClient(t, srv, alice, alicePass))
}

func TestTotalQuota(t *testing.T) {
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, func(c *Config) { c.MaxAllocations = 2 })
	for _, u := range []string{"a", "b"} {
		user, pass := Credentials(testSecret, u, time.Hour, time.Now())
		allocate(t, udpClient(t, srv, user, pass))
	}
	user, pass := Credentials(testSecret, "c", time.Hour, time.Now())
	_, err := udpClient(t, srv, user, pass).Allocate()
	if code := turnErrorCode(err); code != codeQuotaReached {
		t.Fatalf("allocation over total cap: code %d (%v), want 486", code, err)
	}
}

// TCP connections are served concurrently; the quota must still hold.
func TestUserQuotaConcurrent(t *testing.T) {
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, func(c *Config) { c.UserQuota = 3 })
	user, pass := Credentials(testSecret, "carol", time.Hour, time.Now())
	clients := make([]*pturn.Client, 8)
	for i := range clients {
		clients[i] = tcpClient(t, srv, user, pass)
	}

	var wg sync.WaitGroup
	codes := make([]int, len(clients))
	errs := make([]error, len(clients))
	relays := make([]net.PacketConn, len(clients))
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			relay, err := c.Allocate()
			relays[i], codes[i], errs[i] = relay, turnErrorCode(err), err
			if err != nil && codes[i] == 0 {
				codes[i] = -1
			}
		}()
	}
	wg.Wait()

	ok, refused := 0, 0
	for i, code := range codes {
		switch code {
		case 0:
			ok++
			t.Cleanup(func() { _ = relays[i].Close() })
		case codeQuotaReached:
			refused++
			if r := turnErrorReason(errs[i]); r != "Allocation Quota Reached" {
				t.Errorf("client %d: 486 over TCP with reason %q", i, r)
			}
		default:
			t.Errorf("client %d: unexpected code %d", i, code)
		}
	}
	if ok != 3 || refused != 5 {
		t.Fatalf("%d allocated, %d refused; want 3 and 5", ok, refused)
	}
}

func TestQuotaPendingAndRelease(t *testing.T) {
	q := newQuota(1, 10, 10)
	a := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1000}
	b := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 1001}

	if !q.allow("123:dave", "r", a) {
		t.Fatal("first request refused")
	}
	if q.allow("123:dave", "r", b) {
		t.Fatal("pending reservation not counted")
	}
	q.failed(a)
	if !q.allow("456:dave", "r", b) {
		t.Fatal("failed reservation not released")
	}
	q.created(b, "456:dave")
	if n, total := q.counts("dave"); n != 1 || total != 1 {
		t.Fatalf("counts = %d, %d; want 1, 1", n, total)
	}
	q.deleted(b, "456:dave")
	if n, total := q.counts("dave"); n != 0 || total != 0 {
		t.Fatalf("counts after delete = %d, %d; want 0, 0", n, total)
	}
	if quotaUser("99:x:y") != "x:y" || quotaUser("plain") != "plain" {
		t.Fatal("quotaUser parses wrongly")
	}
}

func TestSourceQuota(t *testing.T) {
	q := newQuota(10, 2, 100)
	v6a := &net.UDPAddr{IP: net.ParseIP("2001:db8::1"), Port: 1}
	v6b := &net.UDPAddr{IP: net.ParseIP("2001:db8::ffff:2"), Port: 2} // same /64
	v6c := &net.UDPAddr{IP: net.ParseIP("2001:db8:0:1::1"), Port: 3}  // other /64
	mapped := &net.TCPAddr{IP: net.ParseIP("::ffff:192.0.2.7"), Port: 4}
	plain := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 5}
	other := &net.UDPAddr{IP: net.IPv4(192, 0, 2, 7), Port: 6}

	for _, step := range []struct {
		user string
		src  net.Addr
		want bool
	}{
		{"1:a", v6a, true}, {"1:b", v6b, true}, {"1:c", v6a, false}, {"1:c", v6c, true},
		{"1:a", mapped, true}, {"1:b", plain, true}, {"1:c", other, false},
	} {
		if got := q.allow(step.user, "r", step.src); got != step.want {
			t.Fatalf("allow(%s, %v) = %v, want %v", step.user, step.src, got, step.want)
		}
		if step.want {
			q.created(step.src, step.user)
		}
	}
	q.deleted(mapped, "1:a")
	if n := q.sourceCount(plain); n != 1 {
		t.Fatalf("source count after delete = %d, want 1", n)
	}
	if !q.allow("1:c", "r", other) {
		t.Fatal("freed source slot not reusable")
	}
}
