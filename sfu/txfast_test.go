package sfu

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// txFixture is one PeerConnection's send fast path with a wire behind
// it: pion's path is a writer that encrypts with its own SRTP context, as
// pion's session does; the fast path's socket is a fastConn whose writes
// land on the same wire.
type txFixture struct {
	keys *sessionKeys
	tab  *fastTable
	tx   *txSender
	peer *fastPeer
	conn *fastConn
	to   netip.AddrPort

	pionDown atomic.Bool // pion's transport is not up: it drops what it is given

	mu   sync.Mutex
	wire []txWire
}

type txWire struct {
	pkt  []byte
	pion bool
}

func newTxFixture(t *testing.T, profile srtp.ProtectionProfile) *txFixture {
	t.Helper()
	keyLen, _ := profile.KeyLen()
	saltLen, _ := profile.SaltLen()
	k := &sessionKeys{profile: profile, localKey: make([]byte, keyLen), localSalt: make([]byte, saltLen)}
	_, _ = rand.Read(k.localKey)
	_, _ = rand.Read(k.localSalt)
	f := &txFixture{keys: k, tab: newFastTable(5 * time.Second), to: netip.MustParseAddrPort("10.0.0.2:4000")}
	f.tx = &txSender{tab: f.tab, pass: txPassPackets}
	f.peer = newFastPeer(f.tab)
	f.conn = &fastConn{tab: f.tab, write: func(b []byte, to netip.AddrPort) (int, error) {
		if to != f.to {
			t.Errorf("fast path wrote to %v, want %v", to, f.to)
		}
		f.add(b, false)
		return len(b), nil
	}}
	f.tx.enable(k, f.peer)
	return f
}

func (f *txFixture) add(b []byte, pion bool) {
	f.mu.Lock()
	f.wire = append(f.wire, txWire{bytes.Clone(b), pion})
	f.mu.Unlock()
}

// pion is what pion's SRTP session does with the packets it is given.
func (f *txFixture) pion(t *testing.T) interceptor.RTPWriter {
	ctx, err := srtp.CreateContext(f.keys.localKey, f.keys.localSalt, f.keys.profile)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, _ interceptor.Attributes) (int, error) {
		if f.pionDown.Load() {
			return 0, nil // as pion's srtpWriterFuture before DTLS is up
		}
		raw, err := (&rtp.Packet{Header: *h, Payload: payload}).Marshal()
		if err != nil {
			return 0, err
		}
		mu.Lock()
		enc, err := ctx.EncryptRTP(nil, raw, nil)
		mu.Unlock()
		if err != nil {
			return 0, err
		}
		f.add(enc, true)
		return len(enc), nil
	})
}

// fast turns the route on or off.
func (f *txFixture) fast(on bool) {
	if on {
		f.peer.tx.Store(&txRoute{conn: f.conn, to: f.to})
	} else {
		f.peer.tx.Store(nil)
	}
}

// receiver decrypts what reaches the wire, as the browser's SRTP context
// would (it starts at ROC 0 with the first packet it gets).
type txReceiver struct {
	ctx  *srtp.Context
	seen int
}

func (f *txFixture) receiver(t *testing.T) *txReceiver {
	ctx, err := srtp.CreateContext(f.keys.localKey, f.keys.localSalt, f.keys.profile, srtp.SRTPReplayProtection(srtpReplayWindow))
	if err != nil {
		t.Fatal(err)
	}
	return &txReceiver{ctx: ctx}
}

// check decrypts the wire's new packets: each must carry its own
// sequence number (and extended one) in its payload.
func (r *txReceiver) check(t *testing.T, f *txFixture) (fast, pion int) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, w := range f.wire[r.seen:] {
		var h rtp.Header
		pkt, err := r.ctx.DecryptRTP(nil, w.pkt, &h)
		if err != nil {
			t.Fatalf("packet %d (pion %v) does not decrypt: %v", r.seen, w.pion, err)
		}
		body := pkt[len(pkt)-8:]
		if uint16(binary.BigEndian.Uint64(body)) != h.SequenceNumber {
			t.Fatalf("packet %d: payload of %d under sequence number %d", r.seen, binary.BigEndian.Uint64(body), h.SequenceNumber)
		}
		if w.pion {
			pion++
		} else {
			fast++
		}
		r.seen++
	}
	return fast, pion
}

// txSend writes the packet of extended sequence number ext.
func txSend(t *testing.T, w interceptor.RTPWriter, ssrc uint32, ext uint64) {
	t.Helper()
	payload := make([]byte, 100)
	binary.BigEndian.PutUint64(payload[len(payload)-8:], ext)
	h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: uint16(ext), Timestamp: uint32(ext * 3000), SSRC: ssrc}
	if _, err := w.Write(&h, payload, nil); err != nil {
		t.Fatalf("write %d: %v", ext, err)
	}
}

// Whichever path each packet takes, and for however long, the receiver
// decrypts every one: across rollovers of the sequence number on the
// fast path alone (pion is handed one in txPassPackets), on pion's path
// alone, and at every switch between them; and pion takes the stream
// back after a long stretch on the fast path.
func TestSendFastPathKeepsRolloverInStep(t *testing.T) {
	for _, profile := range []srtp.ProtectionProfile{srtp.ProtectionProfileAeadAes128Gcm, srtp.ProtectionProfileAes128CmHmacSha1_80} {
		t.Run(profile.String(), func(t *testing.T) {
			f := newTxFixture(t, profile)
			w := f.tx.BindLocalStream(&interceptor.StreamInfo{SSRC: 1, SSRCRetransmission: 2}, f.pion(t))
			r := f.receiver(t)
			ext := uint64(65000) // the first wrap comes soon
			run := func(on bool, n int) {
				f.fast(on)
				for range n {
					txSend(t, w, 1, ext)
					ext++
				}
			}
			run(false, 10)
			run(true, 3*65536+17) // three rollovers on the fast path alone
			run(false, 40000)     // one on pion's alone
			run(true, 1)
			run(false, 1)
			run(true, 70000)
			run(false, 100)
			for range 200 { // switching every few packets
				run(true, 3)
				run(false, 2)
			}
			fast, pion := r.check(t, f)
			t.Logf("%d fast, %d through pion; %+v", fast, pion, f.tab.txSnapshot())
			if want := 3*65536 + 17 + 1 + 70000 + 600; fast < want-(want/txPassPackets)-2 {
				t.Errorf("%d fast, want about %d", fast, want)
			}
			if st := f.tab.txSnapshot(); st.Passed < uint64((3*65536+70000)/txPassPackets) || st.Errors != 0 {
				t.Errorf("send path %+v: want a packet through pion every %d, no errors", st, txPassPackets)
			}
		})
	}
}

// A stream's first packet goes through pion (its context starts the
// stream at ROC 0, as the receiver's does); packets of an SSRC the writer
// was not bound for go through pion; out-of-order packets are encrypted
// with the right rollover counter.
func TestSendFastPathFirstPacketAndOrder(t *testing.T) {
	f := newTxFixture(t, srtp.ProtectionProfileAeadAes128Gcm)
	w := f.tx.BindLocalStream(&interceptor.StreamInfo{SSRC: 1, SSRCRetransmission: 2}, f.pion(t))
	r := f.receiver(t)
	f.fast(true)
	txSend(t, w, 1, 65530)
	if _, pion := r.check(t, f); pion != 1 {
		t.Fatalf("first packet: %d through pion, want 1", pion)
	}
	for _, ext := range []uint64{65531, 65533, 65532, 65536, 65535, 65534, 65538, 65537} {
		txSend(t, w, 1, ext)
	}
	txSend(t, w, 2, 7) // the RTX stream: its own first packet
	txSend(t, w, 2, 8)
	txSend(t, w, 9, 1) // not bound
	fast, pion := r.check(t, f)
	if fast != 9 || pion != 2 {
		t.Fatalf("%d fast, %d through pion; want 9 and 2", fast, pion)
	}
}

// A stream starts with the first packet pion actually encrypts: before
// its DTLS transport is up pion drops what it is given, and the packets
// it dropped must not count (here the sequence number wraps among them:
// counted from the first one written, every later fast packet would carry
// a rollover counter one too high). A packet from before the start is
// dropped.
func TestSendFastPathStartsWithPionsFirstPacket(t *testing.T) {
	f := newTxFixture(t, srtp.ProtectionProfileAeadAes128Gcm)
	w := f.tx.BindLocalStream(&interceptor.StreamInfo{SSRC: 1}, f.pion(t))
	r := f.receiver(t)
	f.fast(true)
	f.pionDown.Store(true)
	ext := uint64(65400)
	for ; ext < 65700; ext++ {
		txSend(t, w, 1, ext)
	}
	f.pionDown.Store(false)
	for end := ext + 140000; ext < end; ext++ {
		txSend(t, w, 1, ext)
	}
	fast, pion := r.check(t, f)
	t.Logf("%d fast, %d through pion; %+v", fast, pion, f.tab.txSnapshot())

	w2 := f.tx.BindLocalStream(&interceptor.StreamInfo{SSRC: 5}, f.pion(t))
	r2 := f.receiver(t)
	f.mu.Lock()
	r2.seen = len(f.wire)
	f.mu.Unlock()
	txSend(t, w2, 5, 2)
	txSend(t, w2, 5, 65534) // reordered from before the first
	for ext := uint64(3); ext < 20000; ext++ {
		txSend(t, w2, 5, ext)
	}
	f.fast(false) // pion takes it back
	for ext := uint64(20000); ext < 20100; ext++ {
		txSend(t, w2, 5, ext)
	}
	if fast, pion := r2.check(t, f); fast+pion != 20098 {
		t.Errorf("%d packets on the wire, want 20,098", fast+pion)
	}
	if st := f.tab.txSnapshot(); st.Dropped != 1 {
		t.Errorf("%d dropped, want 1", st.Dropped)
	}
}

// The route follows the peer's registration: set from the socket and
// address its media arrives on, by a packet that authenticated only (not
// a forged one, not RTCP), cleared when the peer is unregistered or
// moves, and never left behind by a packet racing with the
// unregistration.
func TestSendRouteFollowsRegistration(t *testing.T) {
	f := newFastFixture(t, srtp.ProtectionProfileAeadAes128Gcm, &countingWriter{})
	conn, other := &fastConn{tab: f.tab}, &fastConn{tab: f.tab}
	from := netip.MustParseAddrPort("10.0.0.2:4000")
	if err := f.peer.register(from); err != nil {
		t.Fatal(err)
	}
	seq := uint16(100)
	pkt := func() []byte {
		seq++
		return f.seal(t, fastSSRC, ptVP8, seq, fastPayload(seq, 100))
	}
	scratch := make([]byte, maxPacket)
	forged := pkt()
	forged[len(forged)-1] ^= 1
	rr := []byte{0x80, 201, 0, 1, 0, 0, 0, 1}
	f.tab.handle(forged, from, scratch, conn)
	f.tab.handle(rr, from, scratch, conn)
	if r := f.peer.tx.Load(); r != nil {
		t.Fatalf("route %+v from a forged packet or RTCP", r)
	}
	f.tab.handle(pkt(), from, scratch, conn)
	if r := f.peer.tx.Load(); r == nil || r.conn != conn || r.to != from {
		t.Fatalf("route %+v, want %v via the socket it came on", r, from)
	}
	forged = pkt()
	forged[len(forged)-1] ^= 1
	f.tab.handle(forged, from, scratch, other)
	if r := f.peer.tx.Load(); r == nil || r.conn != conn {
		t.Fatal("a forged packet moved the route")
	}
	f.tab.handle(pkt(), from, scratch, other)
	if r := f.peer.tx.Load(); r == nil || r.conn != other {
		t.Fatal("route did not follow the socket")
	}
	if err := f.peer.register(netip.MustParseAddrPort("10.0.0.3:4000")); err != nil {
		t.Fatal(err)
	}
	if f.peer.tx.Load() != nil {
		t.Fatal("route kept after the address moved")
	}
	f.tab.handle(pkt(), from, scratch, conn) // the old address: not the peer's any more
	if f.peer.tx.Load() != nil {
		t.Fatal("route set from an address the peer left")
	}
	f.peer.unregister()
	f.tab.route(f.peer, conn, from) // a reader that looked the peer up before
	if f.peer.tx.Load() != nil {
		t.Fatal("route left behind by a racing packet")
	}
}

// The send fast path allocates nothing per packet.
func TestSendFastPathAllocatesNothing(t *testing.T) {
	f := newTxFixture(t, srtp.ProtectionProfileAeadAes128Gcm)
	f.conn.write = func(b []byte, _ netip.AddrPort) (int, error) { return len(b), nil }
	w := f.tx.BindLocalStream(&interceptor.StreamInfo{SSRC: 1}, f.pion(t))
	f.fast(true)
	payload := make([]byte, 1100)
	h := rtp.Header{Version: 2, PayloadType: 96, SSRC: 1}
	for range 2 {
		h.SequenceNumber++
		_, _ = w.Write(&h, payload, nil)
	}
	allocs := testing.AllocsPerRun(200, func() {
		h.SequenceNumber++
		if _, err := w.Write(&h, payload, nil); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per packet", allocs)
	}
}

// BenchmarkSendFastPath: record, marshal, encrypt (AES-GCM) a 1,100-byte
// video packet, no socket.
func BenchmarkSendFastPath(b *testing.B) {
	t := &testing.T{}
	f := newTxFixture(t, srtp.ProtectionProfileAeadAes128Gcm)
	f.conn.write = func(b []byte, _ netip.AddrPort) (int, error) { return len(b), nil }
	f.fast(true)
	w := f.tx.BindLocalStream(&interceptor.StreamInfo{SSRC: 1}, f.pion(t))
	payload := make([]byte, 1100)
	h := rtp.Header{Version: 2, PayloadType: 96, SSRC: 1}
	b.ReportAllocs()
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		h.SequenceNumber++
		_, _ = w.Write(&h, payload, nil)
	}
}
