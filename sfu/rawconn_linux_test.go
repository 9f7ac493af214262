//go:build linux

package sfu

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"
)

func listenRaw(t testing.TB, network, addr string) *rawConn {
	t.Helper()
	c, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	r := newRawConn(c)
	if r == nil {
		t.Fatal("no raw I/O on a UDP socket")
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

// A raw socket sends and receives what a net one does, with the same
// addresses, on IPv4, IPv6 and dual-stack sockets.
func TestRawConnRoundTrip(t *testing.T) {
	for _, tc := range []struct{ network, addr, peer string }{
		{"udp4", "127.0.0.1:0", "127.0.0.1:0"},
		{"udp6", "[::1]:0", "[::1]:0"},
		{"udp", "[::]:0", "127.0.0.1:0"}, // dual stack: the sender is IPv4-mapped, as net reports it
		{"udp", "[::]:0", "[::1]:0"},
	} {
		t.Run(tc.network+" "+tc.addr+" from "+tc.peer, func(t *testing.T) {
			r := listenRaw(t, tc.network, tc.addr)
			plain, err := net.ListenUDP(tc.network, net.UDPAddrFromAddrPort(netip.MustParseAddrPort(tc.addr)))
			if err != nil {
				t.Fatal(err)
			}
			defer plain.Close()
			peer := dialFrom(t, tc.peer)
			peerAddr := localAddrPort(peer)
			port := func(c interface{ LocalAddr() net.Addr }) uint16 { return localAddrPort(c).Port() }
			to := func(c interface{ LocalAddr() net.Addr }) netip.AddrPort {
				return netip.AddrPortFrom(peerAddr.Addr(), port(c))
			}
			msg := []byte("raw media datagram")
			if _, err := peer.WriteToUDPAddrPort(msg, to(r)); err != nil {
				t.Fatal(err)
			}
			if _, err := peer.WriteToUDPAddrPort(msg, to(plain)); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1500)
			_ = r.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, from, err := r.ReadFromAddrPort(buf)
			if err != nil || !bytes.Equal(buf[:n], msg) {
				t.Fatalf("raw read: %q, %v", buf[:n], err)
			}
			_ = plain.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, want, err := plain.ReadFromUDPAddrPort(buf)
			if err != nil {
				t.Fatal(err)
			}
			if from != want {
				t.Fatalf("raw read from %v, net reads %v", from, want)
			}
			// Back to the sender, at the address read.
			if n, err := r.WriteToAddrPort(msg, from); err != nil || n != len(msg) {
				t.Fatalf("raw write: %d, %v", n, err)
			}
			_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, src, err := peer.ReadFromUDPAddrPort(buf)
			if err != nil || !bytes.Equal(buf[:n], msg) || src.Port() != port(r) {
				t.Fatalf("peer read %q from %v, %v", buf[:n], src, err)
			}
			// A short buffer truncates, as net's does.
			_, _ = peer.WriteToUDPAddrPort(msg, to(r))
			if n, _, err := r.ReadFromUDPAddrPort(buf[:4]); err != nil || n != 4 {
				t.Fatalf("short read: %d, %v", n, err)
			}
		})
	}
}

// What raw I/O does not handle itself gets net's answer; deadlines and
// Close end a waiting read as net's do.
func TestRawConnErrorsAndDeadlines(t *testing.T) {
	r := listenRaw(t, "udp4", "127.0.0.1:0")
	if _, err := r.WriteToAddrPort([]byte("x"), netip.MustParseAddrPort("[::1]:9")); err == nil {
		t.Error("IPv6 destination on an IPv4 socket: no error")
	}
	if _, err := r.WriteToAddrPort([]byte("x"), netip.AddrPort{}); err == nil {
		t.Error("invalid destination: no error")
	}
	peer := dialFrom(t, "127.0.0.1:0")
	if n, err := r.WriteToAddrPort(nil, localAddrPort(peer)); err != nil || n != 0 {
		t.Errorf("empty datagram: %d, %v", n, err)
	}
	_ = r.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, _, err := r.ReadFromAddrPort(make([]byte, 10)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past the deadline: %v", err)
	}
	_ = r.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, _, err := r.ReadFromAddrPort(make([]byte, 10))
		done <- err
	}()
	time.Sleep(10 * time.Millisecond) // let the read wait in the poller (it must end either way)
	_ = r.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("read after close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting read")
	}
	if _, err := r.WriteToAddrPort([]byte("x"), localAddrPort(peer)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("write after close: %v", err)
	}
}

// Writers on several goroutines share the socket; every datagram arrives
// whole (-race checks the pooled per-write state).
func TestRawConnConcurrentWrites(t *testing.T) {
	r := listenRaw(t, "udp4", "127.0.0.1:0")
	peer := dialFrom(t, "127.0.0.1:0")
	_ = peer.SetReadBuffer(4 << 20)
	const writers, each = 4, 200
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				msg := fmt.Appendf(nil, "writer %d packet %d", w, i)
				if _, err := r.WriteToAddrPort(msg, localAddrPort(peer)); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	seen := map[string]bool{}
	buf := make([]byte, 100)
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(seen) < writers*each {
		n, _, err := peer.ReadFromUDPAddrPort(buf)
		if err != nil {
			t.Fatalf("after %d datagrams: %v", len(seen), err)
		}
		seen[string(buf[:n])] = true
	}
	wg.Wait()
}

// A datagram read and one written allocate nothing.
func TestRawConnAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under -race")
	}
	r := listenRaw(t, "udp4", "127.0.0.1:0")
	peer := dialFrom(t, "127.0.0.1:0")
	to, back := localAddrPort(peer), localAddrPort(r)
	msg, buf := make([]byte, 1200), make([]byte, 1500)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := r.WriteToAddrPort(msg, to); err != nil {
			t.Fatal(err)
		}
		if _, _, err := peer.ReadFromUDPAddrPort(buf); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.WriteToUDPAddrPort(msg, back); err != nil {
			t.Fatal(err)
		}
		if _, _, err := r.ReadFromAddrPort(buf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Fatalf("%.1f allocations per write and read", allocs)
	}
}

// The media net wraps a plain socket for raw I/O, or leaves it as it is.
func TestMediaNetRawSockets(t *testing.T) {
	for _, raw := range []bool{true, false} {
		n, err := newMediaNet(nil, false, raw, nil, 1)
		if err != nil {
			t.Fatal(err)
		}
		c, err := n.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		if _, ok := c.(*rawConn); ok != raw {
			t.Errorf("raw %v: the media socket is a %T", raw, c)
		}
	}
}

// BenchmarkRawConn: a 1,200-byte datagram written and read back on
// loopback, by raw and by net's system calls (both ends timed).
func BenchmarkRawConn(b *testing.B) {
	for _, raw := range []bool{false, true} {
		b.Run(fmt.Sprintf("raw=%v", raw), func(b *testing.B) {
			c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			var s interface {
				WriteToUDPAddrPort([]byte, netip.AddrPort) (int, error)
				ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
				Close() error
			} = c
			if raw {
				s = newRawConn(c)
			}
			defer s.Close()
			to := localAddrPort(c)
			msg, buf := make([]byte, 1200), make([]byte, 1500)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.WriteToUDPAddrPort(msg, to); err != nil {
					b.Fatal(err)
				}
				if _, _, err := s.ReadFromUDPAddrPort(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
