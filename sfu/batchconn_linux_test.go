//go:build linux

package sfu

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"
)

func listenBatch(t testing.TB, addr string) *batchConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Skipf("listen %s: %v", addr, err)
	}
	b, err := newBatchConn(c, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func dialFrom(t testing.TB, addr string) *net.UDPConn {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(addr)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func localAddrPort(c interface{ LocalAddr() net.Addr }) netip.AddrPort {
	return c.LocalAddr().(*net.UDPAddr).AddrPort()
}

// More datagrams than one batch holds, from two senders, all queued
// before the first read: every one comes out once, in order per sender,
// with its payload and its sender's address, and the first read took a
// whole batch from the kernel.
func TestBatchConnReadsQueuedDatagrams(t *testing.T) {
	for _, fam := range []struct{ name, any string }{{"ipv4", "127.0.0.1:0"}, {"ipv6", "[::1]:0"}} {
		t.Run(fam.name, func(t *testing.T) {
			b := listenBatch(t, fam.any)
			senders := []*net.UDPConn{dialFrom(t, fam.any), dialFrom(t, fam.any)}
			const perSender = batchSize + 7
			dst := localAddrPort(b)
			for i := 0; i < perSender; i++ {
				for s, c := range senders {
					msg := bytes.Repeat([]byte{byte(s)}, 1+i*30) // 1 to ~1.2 KB
					if _, err := c.WriteToUDPAddrPort(msg, dst); err != nil {
						t.Fatal(err)
					}
				}
			}
			next := make([]int, len(senders))
			buf := make([]byte, slotSize)
			for got := 0; got < perSender*len(senders); got++ {
				_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
				n, from, err := b.ReadFromAddrPort(buf)
				if err != nil {
					t.Fatalf("read %d: %v", got, err)
				}
				if got == 0 && b.n != batchSize {
					t.Errorf("first recvmmsg took %d datagrams, want a full batch of %d", b.n, batchSize)
				}
				s := -1
				for i, c := range senders {
					if from == localAddrPort(c) {
						s = i
					}
				}
				if s < 0 {
					t.Fatalf("read %d: from %v, not a sender", got, from)
				}
				want := bytes.Repeat([]byte{byte(s)}, 1+next[s]*30)
				if !bytes.Equal(buf[:n], want) {
					t.Fatalf("read %d from sender %d: %d bytes, want datagram %d (%d bytes)", got, s, n, next[s], len(want))
				}
				next[s]++
			}
		})
	}
}

// A datagram longer than the reader's buffer is cut to it, and the next
// read returns the next datagram, as with net.UDPConn.
func TestBatchConnShortBuffer(t *testing.T) {
	b := listenBatch(t, "127.0.0.1:0")
	c := dialFrom(t, "127.0.0.1:0")
	for _, msg := range []string{"0123456789abcdef", "xyz"} {
		if _, err := c.WriteToUDPAddrPort([]byte(msg), localAddrPort(b)); err != nil {
			t.Fatal(err)
		}
	}
	_ = b.SetReadDeadline(time.Now().Add(5 * time.Second))
	small := make([]byte, 4)
	for _, want := range []string{"0123", "xyz"} {
		n, _, err := b.ReadFrom(small)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(small[:n]); got != want {
			t.Fatalf("read %q, want %q", got, want)
		}
	}
}

// A reader blocked in an empty socket returns (with net.ErrClosed) when
// the socket is closed; a read deadline gives a timeout error, which
// pion's mux reader tells apart with os.IsTimeout.
func TestBatchConnCloseAndDeadline(t *testing.T) {
	b := listenBatch(t, "127.0.0.1:0")
	_ = b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, _, err := b.ReadFromAddrPort(make([]byte, 100))
	if !os.IsTimeout(err) {
		t.Fatalf("read past the deadline: %v, want a timeout", err)
	}
	_ = b.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, _, err := b.ReadFromAddrPort(make([]byte, 100))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // let it block; the test holds either way
	_ = b.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("read after close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a blocked read did not return after Close")
	}
}

// Reading a datagram (from a batch or a fresh recvmmsg) allocates nothing.
func TestBatchConnReadAllocatesNothing(t *testing.T) {
	b := listenBatch(t, "127.0.0.1:0")
	c := dialFrom(t, "127.0.0.1:0")
	dst := localAddrPort(b)
	msg := make([]byte, 1200)
	buf := make([]byte, slotSize)
	sendRead := func(k int) {
		for i := 0; i < k; i++ {
			if _, err := c.WriteToUDPAddrPort(msg, dst); err != nil {
				t.Fatal(err)
			}
		}
		for i := 0; i < k; i++ {
			if n, _, err := b.ReadFromAddrPort(buf); err != nil || n != len(msg) {
				t.Fatalf("read: %d, %v", n, err)
			}
		}
	}
	sendRead(1) // warm up the poller
	for _, k := range []int{1, batchSize / 2} {
		if a := testing.AllocsPerRun(200, func() { sendRead(k) }); a != 0 {
			t.Errorf("%d datagrams sent and read: %.1f allocations, want 0", k, a)
		}
	}
}

// BenchmarkMediaSocketRead: CPU per datagram read from a socket holding
// k queued datagrams, batched and with one recvfrom each (the sends are
// not timed).
func BenchmarkMediaSocketRead(b *testing.B) {
	for _, k := range []int{1, 8, 32} {
		for _, batched := range []bool{false, true} {
			b.Run(fmt.Sprintf("queued=%d/batched=%v", k, batched), func(b *testing.B) {
				raw := false // net's system calls here: BenchmarkRawConn compares raw ones
				rc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					b.Fatal(err)
				}
				var r interface {
					ReadFromUDPAddrPort([]byte) (int, netip.AddrPort, error)
					Close() error
				} = rc
				if batched {
					bc, err := newBatchConn(rc, raw)
					if err != nil {
						b.Fatal(err)
					}
					r = bc
				}
				defer r.Close()
				c := dialFrom(b, "127.0.0.1:0")
				dst := localAddrPort(rc)
				msg, buf := make([]byte, 1200), make([]byte, slotSize)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i += k {
					b.StopTimer()
					for j := 0; j < k; j++ {
						_, _ = c.WriteToUDPAddrPort(msg, dst)
					}
					b.StartTimer()
					for j := 0; j < k; j++ {
						if _, _, err := r.ReadFromUDPAddrPort(buf); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}

// The SFU's real network opens its media sockets as batchConns.
func TestMediaNetOpensBatchConns(t *testing.T) {
	n, err := newMediaNet(nil, true, true, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	c, err := n.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if b, ok := c.(*batchConn); !ok || b.raw == nil {
		t.Fatalf("media socket is a %T (%+v), want *batchConn with raw system calls", c, c)
	}
}

// Interface indexes are named as net names them, and the last one is
// remembered.
func TestZoneCache(t *testing.T) {
	ifs, err := net.Interfaces()
	if err != nil || len(ifs) == 0 {
		t.Skip("no interfaces")
	}
	var z zoneCache
	for range 2 {
		if got := z.name(ifs[0].Index); got != ifs[0].Name {
			t.Fatalf("index %d named %q, want %q", ifs[0].Index, got, ifs[0].Name)
		}
	}
	if got := z.name(1 << 30); got != "1073741824" {
		t.Fatalf("unknown index named %q", got)
	}
}
