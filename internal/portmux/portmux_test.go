package portmux

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/pion/stun/v3"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func testTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}, MinVersion: tls.VersionTLS12}
}

func stunBinding(t *testing.T) []byte {
	t.Helper()
	m, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.NewUsername("abcd:efgh"), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func stunAllocate(t *testing.T) []byte {
	t.Helper()
	m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), stun.Fingerprint)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func framed(b []byte) []byte {
	out := binary.BigEndian.AppendUint16(nil, uint16(len(b)))
	return append(out, b...)
}

func TestClassifyBytes(t *testing.T) {
	bind, alloc := stunBinding(t), stunAllocate(t)
	cases := []struct {
		name  string
		b     []byte
		inner bool
		kind  Kind
		ok    bool
	}{
		{"get", []byte("GET / HTTP/1.1\r\n"), false, HTTP, true},
		{"options", []byte("OPTIONS * HTTP/1.1\r\n"), false, HTTP, true},
		{"get inside tls", []byte("GET /ws HTTP/1.1\r\n"), true, HTTPS, true},
		{"stun binding", bind, false, STUN, true},
		{"turn allocate", alloc, false, STUN, true},
		{"turn allocate inside tls", alloc, true, STUNTLS, true},
		{"rfc4571 binding", framed(bind), false, ICETCP, true},
		{"tls hello", []byte{0x16, 0x03, 0x01, 0x02, 0x00}, false, tlsKind, true},
		{"tls inside tls", []byte{0x16, 0x03, 0x01, 0x02, 0x00, 1, 2, 3, 4, 5, 6}, true, 0, false},
		{"framed inside tls", framed(bind), true, 0, false},
		{"lowercase get", []byte("get / HTTP/1.1\r\n"), false, 0, false},
		{"unknown method", []byte("GETX / HTTP/1.1\r\n"), false, 0, false},
		{"ssh", []byte("SSH-2.0-OpenSSH_9.2\r\n"), false, 0, false},
		{"zeros", make([]byte, 16), false, 0, false},
		{"channeldata first", []byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}, false, 0, false},
		{"framed with wrong length", append([]byte{0x00, 0x05}, bind...), false, 0, false},
		{"random", []byte{0xde, 0xad, 0xbe, 0xef}, false, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Every prefix must either ask for more or agree with the end.
			for i := 0; i <= len(tc.b); i++ {
				k, more, ok := classifyBytes(tc.b[:i], tc.inner)
				if !more {
					if ok != tc.ok || ok && k != tc.kind {
						t.Fatalf("after %d bytes: kind %v ok %v, want %v %v", i, k, ok, tc.kind, tc.ok)
					}
					return
				}
			}
			t.Fatalf("still undecided after all %d bytes", len(tc.b))
		})
	}
}

// rig is a Mux on 127.0.0.1:0 with a Listener for every kind.
type rig struct {
	mux  *Mux
	subs [numKinds]net.Listener
	done chan error
}

func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{mux: New(ln, cfg), done: make(chan error, 1)}
	for k := range numKinds {
		r.subs[k] = r.mux.Listener(k)
	}
	go func() { r.done <- r.mux.Serve() }()
	t.Cleanup(func() {
		_ = r.mux.Close()
		if err := <-r.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return r
}

func (r *rig) addr() string { return r.mux.Addr().String() }

// accept waits for a connection on kind k's listener, or fails.
func (r *rig) accept(t *testing.T, k Kind) net.Conn {
	t.Helper()
	got := make(chan net.Conn, 1)
	go func() {
		c, err := r.subs[k].Accept()
		if err == nil {
			got <- c
		}
	}()
	select {
	case c := <-got:
		t.Cleanup(func() { _ = c.Close() })
		return c
	case <-time.After(5 * time.Second):
		t.Fatalf("no %v connection", k)
		return nil
	}
}

// trickle writes each of the first 100 bytes of the stream in a write of
// its own, with a pause between (a TLS ClientHello with post-quantum key
// shares is over 1 KB; its first bytes are what classification reads).
type trickle struct {
	net.Conn
	gap  time.Duration
	sent *int
}

func (c trickle) Write(p []byte) (int, error) {
	for i := range p {
		if *c.sent >= 100 {
			n, err := c.Conn.Write(p[i:])
			return i + n, err
		}
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
		*c.sent++
		time.Sleep(c.gap)
	}
	return len(p), nil
}

// writeSlowly writes msg one byte per Write call (inside TLS: one record
// per byte), or all at once.
func writeSlowly(w io.Writer, msg []byte, slow bool) {
	if !slow {
		_, _ = w.Write(msg)
		return
	}
	for i := range msg {
		if _, err := w.Write(msg[i : i+1]); err != nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func dial(t *testing.T, addr string, slow bool) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if slow {
		return trickle{Conn: c, gap: 2 * time.Millisecond, sent: new(int)}
	}
	return c
}

func TestEachProtocolReachesItsListener(t *testing.T) {
	bind, alloc := stunBinding(t), stunAllocate(t)
	request := []byte("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	for _, slow := range []bool{false, true} {
		name := "fast"
		if slow {
			name = "one byte at a time"
		}
		t.Run(name, func(t *testing.T) {
			r := newRig(t, Config{TLS: testTLS(t), Timeout: 5 * time.Second})
			plain := []struct {
				kind Kind
				msg  []byte
			}{{HTTP, request}, {STUN, alloc}, {ICETCP, framed(bind)}}
			for _, p := range plain {
				c := dial(t, r.addr(), slow)
				go func() { _, _ = c.Write(p.msg) }()
				expectBytes(t, r.accept(t, p.kind), p.msg)
			}
			// TLS: ALPN stun.turn, ALPN http/1.1, and no ALPN with
			// STUN or HTTP inside.
			tlsCases := []struct {
				alpn []string
				kind Kind
				msg  []byte
			}{
				{[]string{ALPNTURN}, STUNTLS, alloc},
				{[]string{"http/1.1"}, HTTPS, request},
				{nil, STUNTLS, alloc},
				{nil, HTTPS, request},
			}
			for _, tc := range tlsCases {
				tconn := tls.Client(dial(t, r.addr(), slow), &tls.Config{InsecureSkipVerify: true, NextProtos: tc.alpn}) //nolint:gosec // test certificate
				go writeSlowly(tconn, tc.msg, slow)
				c := r.accept(t, tc.kind)
				expectBytes(t, c, tc.msg)
				if tc.alpn != nil {
					if _, ok := c.(*tls.Conn); !ok {
						t.Errorf("ALPN %v: got %T, want *tls.Conn", tc.alpn, c)
					}
				}
				// And the way back through TLS.
				if _, err := c.Write([]byte("pong")); err != nil {
					t.Fatal(err)
				}
				expectBytes(t, tconn, []byte("pong"))
				_ = tconn.Close()
			}
		})
	}
}

func expectBytes(t *testing.T, c net.Conn, want []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(want))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	_ = c.SetReadDeadline(time.Time{})
}

// closedWithin asserts the server closes c within d.
func closedWithin(t *testing.T, c net.Conn, d time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	_ = c.SetReadDeadline(start.Add(d))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("still open after %v", d)
	}
	if err == nil {
		t.Fatal("server sent data, want close")
	}
	return time.Since(start)
}

func TestGarbageIsClosedAtOnce(t *testing.T) {
	r := newRig(t, Config{TLS: testTLS(t), Timeout: 10 * time.Second})
	for _, g := range [][]byte{
		[]byte("SSH-2.0-OpenSSH_9.2\r\n"),
		{0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0, 0, 0, 0},
		make([]byte, 12),
		[]byte("get / HTTP/1.1\r\n"),
	} {
		c := dial(t, r.addr(), false)
		if _, err := c.Write(g); err != nil {
			t.Fatal(err)
		}
		// Well before the 10 s timeout.
		closedWithin(t, c, 3*time.Second)
	}
	// Garbage inside TLS, too.
	tconn := tls.Client(dial(t, r.addr(), false), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // test certificate
	if _, err := tconn.Write([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); err != nil {
		t.Fatal(err)
	}
	_ = tconn.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := tconn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("TLS garbage: read returned %v, want closed", err)
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestSilentConnectionClosedWithoutHoldingOthers(t *testing.T) {
	const timeout = 400 * time.Millisecond
	r := newRig(t, Config{TLS: testTLS(t), Timeout: timeout})
	var silent []net.Conn
	for range 20 {
		silent = append(silent, dial(t, r.addr(), false))
	}
	// A half-written STUN header stalls too.
	half := dial(t, r.addr(), false)
	if _, err := half.Write(stunAllocate(t)[:5]); err != nil {
		t.Fatal(err)
	}
	// Meanwhile a real client gets through at once.
	start := time.Now()
	c := dial(t, r.addr(), false)
	msg := stunAllocate(t)
	if _, err := c.Write(msg); err != nil {
		t.Fatal(err)
	}
	expectBytes(t, r.accept(t, STUN), msg)
	if d := time.Since(start); d > timeout/2 {
		t.Errorf("a good connection waited %v behind silent ones", d)
	}
	for _, s := range append(silent, half) {
		if d := closedWithin(t, s, 5*time.Second); d > 3*time.Second {
			t.Errorf("silent connection closed after %v, timeout %v", d, timeout)
		}
	}
	// A TLS client that never finishes its handshake is closed as well.
	stalled := dial(t, r.addr(), false)
	if _, err := stalled.Write([]byte{0x16, 0x03, 0x01}); err != nil {
		t.Fatal(err)
	}
	closedWithin(t, stalled, 5*time.Second)
}

func TestUnservedKindIsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New(ln, Config{Timeout: 5 * time.Second}) // no TLS, only HTTP served
	httpLn := m.Listener(HTTP)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "hi") }),
		ReadHeaderTimeout: time.Second}
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	go func() { _ = srv.Serve(httpLn) }()
	defer func() {
		_ = srv.Close()
		_ = m.Close()
		<-served
	}()
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(bufio.NewReader(resp.Body))
	resp.Body.Close()
	if string(body) != "hi" {
		t.Fatalf("body %q", body)
	}
	// STUN (no listener) and TLS (no certificate) are closed.
	for _, first := range [][]byte{stunAllocate(t), {0x16, 0x03, 0x01, 0x00, 0x10}} {
		c := dial(t, ln.Addr().String(), false)
		if _, err := c.Write(first); err != nil {
			t.Fatal(err)
		}
		closedWithin(t, c, 3*time.Second)
	}
}

func TestMaxPending(t *testing.T) {
	r := newRig(t, Config{Timeout: 5 * time.Second, MaxPending: 2})
	a, b := dial(t, r.addr(), false), dial(t, r.addr(), false)
	_, _ = a, b
	// Wait until both hold their slots.
	deadline := time.Now().Add(5 * time.Second)
	for len(r.mux.pending) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("pending never reached 2")
		}
		time.Sleep(time.Millisecond)
	}
	closedWithin(t, dial(t, r.addr(), false), 3*time.Second)
}

func TestLimitPerSourceAndTotal(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := Limit(ln, 2, 3)
	defer lim.Close()
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := lim.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	next := func() net.Conn {
		t.Helper()
		select {
		case c := <-accepted:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("not accepted")
			return nil
		}
	}
	// Two from 127.0.0.1 are taken; a third is closed at once.
	a, b := dial(t, ln.Addr().String(), false), dial(t, ln.Addr().String(), false)
	ca, cb := next(), next()
	third := dial(t, ln.Addr().String(), false)
	closedWithin(t, third, 3*time.Second)
	// Another source (127.0.0.2) still gets in, up to the total of 3.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	other, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	co := next()
	fourth, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 3)}}).Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	closedWithin(t, fourth, 3*time.Second)
	// Closing one frees its slot.
	_ = ca.Close()
	_ = ca.Close() // idempotent: released once
	again := dial(t, ln.Addr().String(), false)
	cg := next()
	for _, c := range []net.Conn{cb, co, cg} {
		_ = c.Close()
	}
	_, _, _ = a, b, again
}

// TestCloseCutsClassificationsShort: Close does not wait out the timeout of
// connections still being classified, and closes them.
func TestCloseCutsClassificationsShort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := New(ln, Config{Timeout: time.Minute})
	m.Listener(STUN)
	served := make(chan error, 1)
	go func() { served <- m.Serve() }()
	var silent []net.Conn
	for range 10 {
		silent = append(silent, dial(t, ln.Addr().String(), false))
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(m.pending) < len(silent) {
		if time.Now().After(deadline) {
			t.Fatalf("%d pending, want %d", len(m.pending), len(silent))
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("Close took %v", d)
	}
	for _, c := range silent {
		closedWithin(t, c, 3*time.Second)
	}
	if _, err := m.Listener(STUN).Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
}

// TestMaxPendingPerSource: silent connections from one address take at
// most MaxPendingPerSource slots; another address still gets through.
func TestMaxPendingPerSource(t *testing.T) {
	r := newRig(t, Config{Timeout: 5 * time.Second, MaxPendingPerSource: 2})
	a, b := dial(t, r.addr(), false), dial(t, r.addr(), false)
	_, _ = a, b
	deadline := time.Now().Add(5 * time.Second)
	for len(r.mux.pending) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("pending never reached 2")
		}
		time.Sleep(time.Millisecond)
	}
	closedWithin(t, dial(t, r.addr(), false), 3*time.Second)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	other, err := d.Dial("tcp", r.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	deadline = time.Now().Add(5 * time.Second)
	for len(r.mux.pending) < 3 {
		if time.Now().After(deadline) {
			t.Fatal("a connection from another address was not taken for classification")
		}
		time.Sleep(time.Millisecond)
	}
}
