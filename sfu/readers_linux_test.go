//go:build linux

package sfu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pion/srtp/v3"
)

// Unit tests of readersConn (readers.go): K real SO_REUSEPORT sockets on
// loopback, many client sockets, a fast-path table with registered
// senders (the fixtures of rxfast_test.go).

// readersFixture is a readersConn on 127.0.0.1, port 0, with K readers.
type readersFixture struct {
	tab  *fastTable
	conn *readersConn
	addr *net.UDPAddr
}

func newReadersFixture(t *testing.T, tab *fastTable, k int, batched bool) *readersFixture {
	t.Helper()
	verifyNoLeaks(t)
	n, err := newMediaNet(nil, batched, true, tab, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := n.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r, ok := c.(*readersConn)
	if !ok {
		t.Fatalf("media socket is a %T, want *readersConn", c)
	}
	addr := r.LocalAddr().(*net.UDPAddr)
	if addr.Port == 0 || len(r.socks) != k {
		t.Fatalf("%d sockets at %v", len(r.socks), addr)
	}
	for i, s := range r.socks {
		if s.LocalAddr().String() != addr.String() {
			t.Fatalf("socket %d at %v, socket 0 at %v", i, s.LocalAddr(), addr)
		}
	}
	return &readersFixture{tab: tab, conn: r, addr: addr}
}

// client is a socket sending to the fixture.
func (f *readersFixture) client(t *testing.T) *net.UDPConn {
	t.Helper()
	c, err := net.DialUDP("udp4", nil, f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// fastSender is a fixture sender registered in tab from cl's address,
// forwarding to w.
func fastSender(t *testing.T, tab *fastTable, cl *net.UDPConn, w *payloadWriter) *fastFixture {
	t.Helper()
	s := newFastFixture(t, srtp.ProtectionProfileAeadAes128Gcm, w)
	s.tab, s.peer = tab, newFastPeer(tab)
	if err := s.peer.setKeys(s.prof, s.key, s.salt, nil); err != nil {
		t.Fatal(err)
	}
	s.newTrack(w)
	if err := s.peer.register(cl.LocalAddr().(*net.UDPAddr).AddrPort()); err != nil {
		t.Fatal(err)
	}
	return s
}

// waitFor polls cond until it holds (or fails the test after 10 s).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// slowDatagram is datagram i of client c: STUN-like (first byte 0) or
// RTP-like of an unregistered SSRC, both for pion; its bytes name c and i.
func slowDatagram(c, i int) []byte {
	b := make([]byte, 24)
	if i%2 == 0 {
		b[0], b[1] = 0x80, 96 // RTP, payload type 96
	} else {
		b[0] = 0x00 // STUN
	}
	binary.BigEndian.PutUint32(b[8:], uint32(0xabc00000+c)) // the SSRC, if RTP
	binary.BigEndian.PutUint32(b[12:], uint32(c))
	binary.BigEndian.PutUint32(b[16:], uint32(i))
	return b
}

// pionSide reads the conn as pion's mux does and keeps what it got.
type pionSide struct {
	mu   sync.Mutex
	got  map[[2]uint32]int // (client, i) -> times read
	bad  []string
	done chan struct{}
}

func readAsPion(r *readersConn, from map[uint32]netip.AddrPort) *pionSide {
	p := &pionSide{got: map[[2]uint32]int{}, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		buf := make([]byte, handoffSize)
		for {
			n, src, err := r.ReadFromAddrPort(buf)
			if err != nil {
				return
			}
			c, i := binary.BigEndian.Uint32(buf[12:16]), binary.BigEndian.Uint32(buf[16:20])
			p.mu.Lock()
			p.got[[2]uint32{c, i}]++
			if n != 24 || src != from[c] {
				p.bad = append(p.bad, src.String())
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *pionSide) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.got)
}

// Three sockets on one address, many clients: every datagram for pion
// reaches its read loop exactly once with its sender's address; every
// fast sender's packets are forwarded in order; several readers worked;
// Close ends them all (goleak).
func TestReadersConnSpreadsAndHandsOver(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(map[bool]string{false: "plain", true: "batched"}[batched], func(t *testing.T) {
			readersSpread(t, batched)
		})
	}
}

func readersSpread(t *testing.T, batched bool) {
	const slowClients, slowEach, fastClients, fastEach = 20, 40, 4, 120
	tab := newFastTable(time.Hour)
	tab.passEvery, tab.passPackets = time.Hour, 1<<31
	f := newReadersFixture(t, tab, 3, batched)
	from := map[uint32]netip.AddrPort{}
	var slow []*net.UDPConn
	for c := range slowClients {
		cl := f.client(t)
		slow = append(slow, cl)
		from[uint32(c)] = cl.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	var senders []*fastFixture
	var cls []*net.UDPConn
	var ws []*payloadWriter
	for range fastClients {
		cl, w := f.client(t), &payloadWriter{}
		senders, cls, ws = append(senders, fastSender(t, tab, cl, w)), append(cls, cl), append(ws, w)
	}
	pion := readAsPion(f.conn, from)
	// In rounds, each waited for, so that no socket or queue overflows.
	for i := range max(slowEach, fastEach) {
		for c, cl := range slow {
			if i < slowEach {
				if _, err := cl.Write(slowDatagram(c, i)); err != nil {
					t.Fatal(err)
				}
			}
		}
		for s, cl := range cls {
			if i < fastEach {
				seq := uint16(i + 1)
				if _, err := cl.Write(senders[s].seal(t, fastSSRC, ptVP8, seq, fastPayload(seq, 1000))); err != nil {
					t.Fatal(err)
				}
			}
		}
		waitFor(t, "a round", func() bool {
			ok := pion.count() == slowClients*min(i+1, slowEach)
			for _, w := range ws {
				ok = ok && w.count() == min(i+1, fastEach)
			}
			return ok
		})
	}
	pion.mu.Lock()
	for k, n := range pion.got {
		if n != 1 {
			t.Errorf("datagram %v read %d times", k, n)
		}
	}
	if len(pion.bad) > 0 {
		t.Errorf("%d datagrams with a wrong length or source, e.g. from %s", len(pion.bad), pion.bad[0])
	}
	pion.mu.Unlock()
	for s, w := range ws {
		for i, p := range w.pays {
			if !bytes.Equal(p, fastPayload(uint16(i+1), 1000)) {
				t.Fatalf("sender %d: packet %d forwarded out of order or damaged", s, i)
			}
		}
	}
	checkReaderCounts(t, f.conn, fastClients*fastEach, slowClients*slowEach)
	if st := tab.snapshot(); st.Fast != fastClients*fastEach || st.Overflow != 0 {
		t.Errorf("counters %+v", st)
	}
	if err := f.conn.Close(); err != nil {
		t.Fatal(err)
	}
	<-pion.done
}

// checkReaderCounts checks the per-reader counts add up and that more
// than one reader worked (24 client addresses over 3 sockets: all on one
// has probability 3^-23).
func checkReaderCounts(t *testing.T, r *readersConn, fast, handed int) {
	t.Helper()
	var sumFast, sumHanded uint64
	busy := 0
	for i, n := range r.taken() {
		h := r.handed[i].Load()
		t.Logf("reader %d: %d fast, %d handed to pion", i, n, h)
		sumFast, sumHanded = sumFast+n, sumHanded+h
		if n+h > 0 {
			busy++
		}
	}
	if sumFast != uint64(fast) || sumHanded != uint64(handed) || busy < 2 {
		t.Errorf("readers: %d fast, %d handed, %d busy; want %d, %d, >= 2", sumFast, sumHanded, busy, fast, handed)
	}
}

// With pion's read loop not reading, a reader drops (and counts) what it
// would hand over past the queue, and keeps forwarding media; pion then
// reads the queued datagrams; the read deadline is honoured; Close
// unblocks a waiting read.
func TestReadersConnOverflowDeadlineClose(t *testing.T) {
	w := &payloadWriter{}
	tab := newFastTable(time.Hour)
	tab.passEvery, tab.passPackets = time.Hour, 1<<31
	f := newReadersFixture(t, tab, 3, false)
	slow, fastCl := f.client(t), f.client(t)
	sender := fastSender(t, tab, fastCl, w)
	const extra = 40
	for i := range handoffQueue + extra {
		if _, err := slow.Write(slowDatagram(0, i)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the datagram", func() bool {
			var h uint64
			for i := range f.conn.handed {
				h += f.conn.handed[i].Load()
			}
			return h+tab.stats.overflow.Load() == uint64(i+1)
		})
	}
	if got := tab.stats.overflow.Load(); got != extra {
		t.Fatalf("overflow %d, want %d", got, extra)
	}
	for seq := uint16(1); seq <= 10; seq++ {
		if _, err := fastCl.Write(sender.seal(t, fastSSRC, ptVP8, seq, fastPayload(seq, 500))); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "fast packets while the queue is full", func() bool { return w.count() == 10 })
	buf := make([]byte, 16)
	for i := range handoffQueue {
		n, from, err := f.conn.ReadFromAddrPort(buf)
		if err != nil || n != 16 || from != slow.LocalAddr().(*net.UDPAddr).AddrPort() ||
			binary.BigEndian.Uint32(buf[12:16]) != 0 {
			t.Fatalf("read %d: %d bytes from %v, %v", i, n, from, err)
		}
	}
	_ = f.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, _, err := f.conn.ReadFromAddrPort(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	_ = f.conn.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, _, err := f.conn.ReadFromAddrPort(buf)
		errc <- err
	}()
	if err := f.conn.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read after Close: %v", err)
	}
}

// One reader, another network, or no fast path: a single socket, read by
// pion's loop as before.
func TestMediaNetSingleReader(t *testing.T) {
	tab := newFastTable(time.Hour)
	for _, tc := range []struct {
		name    string
		tab     *fastTable
		readers int
	}{{"one reader", tab, 1}, {"no fast path", nil, 3}} {
		n, err := newMediaNet(nil, false, true, tc.tab, tc.readers)
		if err != nil {
			t.Fatal(err)
		}
		c, err := n.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		_ = c.Close()
		if _, ok := c.(*readersConn); ok {
			t.Errorf("%s: a readersConn", tc.name)
		}
	}
}

// Sockets bound to an explicit port join the port's group (as the second
// and later sockets of an ephemeral port do); a socket without
// SO_REUSEPORT cannot take the port.
func TestListenReusePortExplicitPort(t *testing.T) {
	first, err := listenReusePort("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer closeUDPConns(first)
	addr := first[0].LocalAddr().(*net.UDPAddr)
	more, err := listenReusePort("udp4", addr, 2)
	if err != nil {
		t.Fatalf("joining %v: %v", addr, err)
	}
	defer closeUDPConns(more)
	if more[1].LocalAddr().String() != addr.String() {
		t.Fatalf("joined at %v, want %v", more[1].LocalAddr(), addr)
	}
	if c, err := net.ListenUDP("udp4", addr); err == nil {
		_ = c.Close()
		t.Fatalf("a plain socket took %v", addr)
	}
}
