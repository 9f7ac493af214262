package sfu

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// Unit tests of the receive fast path (rxfast.go) without PeerConnections:
// a table with one peer whose keys the test chooses, real UDP sockets.

// payloadWriter is a TrackLocalWriter that keeps what it is given.
type payloadWriter struct {
	mu   sync.Mutex
	seqs []uint16
	pays [][]byte
}

func (w *payloadWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.mu.Lock()
	w.seqs = append(w.seqs, h.SequenceNumber)
	w.pays = append(w.pays, append([]byte(nil), payload...))
	w.mu.Unlock()
	return len(payload), nil
}

func (w *payloadWriter) Write(b []byte) (int, error) { return len(b), nil }

func (w *payloadWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pays)
}

// fastFixture is a fast path with one peer, one video stream (SSRC
// fastSSRC, RTX fastRTXSSRC) and a subscriber writing into w.
type fastFixture struct {
	tab  *fastTable
	peer *fastPeer
	up   *upTrack
	tx   *srtp.Context // the remote sender's
	key  []byte
	salt []byte
	prof srtp.ProtectionProfile
}

const (
	fastSSRC    = 0x1111
	fastRTXSSRC = 0x2222
)

func newFastFixture(t testing.TB, prof srtp.ProtectionProfile, w webrtc.TrackLocalWriter) *fastFixture {
	t.Helper()
	kl, _ := prof.KeyLen()
	sl, _ := prof.SaltLen()
	f := &fastFixture{tab: newFastTable(time.Hour), key: make([]byte, kl), salt: make([]byte, sl), prof: prof}
	_, _ = rand.Read(f.key)
	_, _ = rand.Read(f.salt)
	var err error
	if f.tx, err = srtp.CreateContext(f.key, f.salt, prof); err != nil {
		t.Fatal(err)
	}
	// No copies for pion unless a test asks.
	f.tab.passEvery, f.tab.passPackets, f.tab.rtcpPassEvery = time.Hour, 1<<31, time.Hour
	f.peer = newFastPeer(f.tab)
	if err := f.peer.setKeys(prof, f.key, f.salt, nil); err != nil {
		t.Fatal(err)
	}
	f.newTrack(w)
	return f
}

// newTrack registers a new upTrack (with one subscriber writing to w)
// for the fixture's streams.
func (f *fastFixture) newTrack(w webrtc.TrackLocalWriter) {
	f.up = &upTrack{kind: webrtc.RTPCodecTypeVideo, kf: newKeyframeThrottle(time.Hour, func() {}), epoch: time.Now()}
	f.up.rx.clockRate = 90000
	d := newDownTrack(webrtc.RTPCodecTypeVideo, "s", nil)
	d.ssrc, d.pt, d.writer = 42, ptVP8, w
	f.up.addSink(d)
	f.peer.addStream(&fastStream{ssrc: fastSSRC, up: f.up})
	f.peer.addStream(&fastStream{ssrc: fastRTXSSRC, up: f.up, rtx: true, media: fastSSRC, pt: ptVP8})
}

// receive hands b to the peer as the socket reader would; true if taken.
func (f *fastFixture) receive(b []byte) bool {
	ok, _ := f.peer.receive(b, make([]byte, maxPacket), nil, netip.AddrPort{})
	return ok
}

// newReceiveContext gives the peer a fresh receiving context (a benchmark
// that replays its packets).
func (f *fastFixture) newReceiveContext(t testing.TB) {
	ctx, err := srtp.CreateContext(f.key, f.salt, f.prof, srtp.SRTPReplayProtection(srtpReplayWindow))
	if err != nil {
		t.Fatal(err)
	}
	f.peer.ctx = ctx
}

// fastPayload is the payload of media packet seq.
func fastPayload(seq uint16, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(int(seq) + i)
	}
	return b
}

// seal encrypts an RTP packet as the remote sender would.
func (f *fastFixture) seal(t testing.TB, ssrc uint32, pt uint8, seq uint16, payload []byte) []byte {
	t.Helper()
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, SSRC: ssrc},
		Payload: payload}
	_ = p.SetExtension(3, []byte{byte(seq >> 8), byte(seq)}) // a transport-cc sequence number
	raw, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	out, err := f.tx.EncryptRTP(nil, raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// rtxPayload wraps a media packet's payload for RTX (RFC 4588).
func rtxPayload(osn uint16, payload []byte) []byte {
	return append(binary.BigEndian.AppendUint16(nil, osn), payload...)
}

func TestIsRTP(t *testing.T) {
	pkt := func(b0, b1 byte) []byte { b := make([]byte, 12); b[0], b[1] = b0, b1; return b }
	for _, c := range []struct {
		name string
		b    []byte
		want bool
	}{
		{"rtp", pkt(0x80, 96), true},
		{"rtp marker", pkt(0x90, 0x80|96), true},
		{"pt 95 marker looks like rtcp 223 (RFC 5761)", pkt(0x80, 0x80|95), false},
		{"rtcp sr", pkt(0x80, 200), false},
		{"rtcp 192", pkt(0x80, 192), false},
		{"rtcp 223", pkt(0x80, 223), false},
		{"pt 96 marker (224)", pkt(0x80, 224), true},
		{"stun", pkt(0x00, 0x01), false},
		{"dtls", pkt(22, 0xfe), false},
		{"version 3", pkt(0xc0, 96), false},
		{"short", []byte{0x80, 96, 0, 1}, false},
	} {
		if got := isRTP(c.b); got != c.want {
			t.Errorf("%s: isRTP = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestUnwrapRTX(t *testing.T) {
	payload := []byte("repaired payload")
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: ptVP8RTX, SequenceNumber: 7, Timestamp: 9, SSRC: fastRTXSSRC, Marker: true},
		Payload: rtxPayload(1234, payload)}
	_ = p.SetExtension(3, []byte{0, 1})
	raw, _ := p.Marshal()
	got := unwrapRTX(raw, ptVP8, fastSSRC)
	var q rtp.Packet
	if err := q.Unmarshal(got); err != nil {
		t.Fatal(err)
	}
	if q.SequenceNumber != 1234 || q.SSRC != fastSSRC || q.PayloadType != ptVP8 || !q.Marker || q.Timestamp != 9 ||
		!bytes.Equal(q.Payload, payload) || !bytes.Equal(q.GetExtension(3), []byte{0, 1}) {
		t.Fatalf("unwrapped %+v payload %q", q.Header, q.Payload)
	}
	// Padding only (a bandwidth probe on the RTX stream): nothing to restore.
	pad := rtp.Packet{Header: rtp.Header{Version: 2, Padding: true, PaddingSize: 200, SSRC: fastRTXSSRC}}
	raw, _ = pad.Marshal()
	if unwrapRTX(raw, ptVP8, fastSSRC) != nil {
		t.Fatal("padding-only RTX packet restored")
	}
	// Truncated extension header.
	if unwrapRTX([]byte{0x90, 97, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0xbe}, ptVP8, fastSSRC) != nil {
		t.Fatal("truncated packet restored")
	}
}

// fastConnPair is a fastConn on a loopback socket and a client socket.
func fastConnPair(t *testing.T, tab *fastTable, batched bool) (*fastConn, *net.UDPConn) {
	t.Helper()
	n, err := newMediaNet(nil, batched, true, tab, 1)
	if err != nil {
		t.Fatal(err)
	}
	c, err := n.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	fc, ok := c.(*fastConn)
	if !ok {
		t.Fatalf("media socket is a %T", c)
	}
	cl, err := net.DialUDP("udp4", nil, c.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return fc, cl
}

// The socket reader forwards registered streams' packets (decrypted, RTX
// restored) and returns everything else to its caller (pion) unchanged;
// a forged packet is dropped and counted.
func TestFastConnTakesRegisteredStreams(t *testing.T) {
	for _, batched := range []bool{false, true} {
		for _, prof := range []srtp.ProtectionProfile{srtp.ProtectionProfileAes128CmHmacSha1_80, srtp.ProtectionProfileAeadAes128Gcm} {
			t.Run(map[bool]string{false: "plain", true: "batched"}[batched]+"/"+prof.String(), func(t *testing.T) {
				fastConnTakes(t, batched, prof)
			})
		}
	}
}

func fastConnTakes(t *testing.T, batched bool, prof srtp.ProtectionProfile) {
	w := &payloadWriter{}
	f := newFastFixture(t, prof, w)
	fc, cl := fastConnPair(t, f.tab, batched)
	if err := f.peer.register(netip.MustParseAddrPort(cl.LocalAddr().String())); err != nil {
		t.Fatal(err)
	}
	forged := f.seal(t, fastSSRC, ptVP8, 3, fastPayload(3, 300))
	forged[len(forged)-1] ^= 1
	stranger := newFastFixture(t, prof, w) // other keys, same SSRCs
	rtcpPkt := []byte{0x80, 200, 0, 6, 0, 0, 0x11, 0x11, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20}
	stun := []byte{0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}
	unknown := f.seal(t, 0x9999, ptVP8, 1, fastPayload(1, 100))
	sends := [][]byte{
		f.seal(t, fastSSRC, ptVP8, 1, fastPayload(1, 1000)),
		stun,
		f.seal(t, fastSSRC, ptVP8, 2, fastPayload(2, 1000)),
		rtcpPkt,
		forged,
		stranger.seal(t, fastSSRC, ptVP8, 4, fastPayload(4, 100)),
		f.seal(t, fastRTXSSRC, ptVP8RTX, 1, rtxPayload(5, fastPayload(5, 700))),
		unknown,
		f.seal(t, fastSSRC, ptVP8, 2, fastPayload(2, 1000)), // a replay
		f.seal(t, fastSSRC, ptVP8, 6, fastPayload(6, 1000)),
	}
	for _, b := range sends {
		if _, err := cl.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	// pion would read: the STUN, the RTCP and the unknown SSRC's packet.
	buf := make([]byte, 8192)
	for _, want := range [][]byte{stun, rtcpPkt, unknown} {
		_ = fc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := fc.ReadFromAddrPort(buf)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:n], want) || from.String() != cl.LocalAddr().String() {
			t.Fatalf("read %x from %v, want %x", buf[:n], from, want)
		}
	}
	// The rest was taken before the unknown SSRC's packet was returned,
	// except the last one.
	_ = fc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := fc.ReadFromAddrPort(buf); err == nil {
		t.Fatal("a taken packet reached the caller")
	}
	wantSeqs := []uint16{1, 2, 5, 6}
	if w.count() != len(wantSeqs) {
		t.Fatalf("forwarded %d packets, want %d", w.count(), len(wantSeqs))
	}
	for i, seq := range wantSeqs {
		if !bytes.Equal(w.pays[i], fastPayload(seq, len(w.pays[i]))) {
			t.Errorf("packet %d (seq %d): payload corrupt", i, seq)
		}
	}
	st := f.tab.snapshot()
	if st.Fast != 4 || st.AuthFailures != 2 || st.Dropped != 1 || st.Fallback != 1 {
		t.Fatalf("counters %+v, want 4 fast, 2 auth failures, 1 dropped (replay), 1 fallback", st)
	}
	if f.up.stats.recovered.Load() != 1 {
		t.Fatalf("recovered %d, want 1 (the RTX packet)", f.up.stats.recovered.Load())
	}
}

// A stream that fails authentication from the start goes back to pion; one
// that has decrypted never does (forged packets cannot push it off the
// fast path).
func TestFastStreamReleasedAfterFailures(t *testing.T) {
	w := &payloadWriter{}
	f := newFastFixture(t, srtp.ProtectionProfileAes128CmHmacSha1_80, w)
	other := newFastFixture(t, srtp.ProtectionProfileAes128CmHmacSha1_80, &payloadWriter{})
	if !f.receive(f.seal(t, fastSSRC, ptVP8, 1000, fastPayload(1000, 100))) {
		t.Fatal("good packet not taken")
	}
	for i := range 2 * fastReleaseAfter {
		f.receive(other.seal(t, fastSSRC, ptVP8, uint16(2000+i), fastPayload(1, 100)))
	}
	if f.peer.stream(fastSSRC) == nil {
		t.Fatal("forged packets released a stream that decrypts")
	}
	if !f.receive(f.seal(t, fastSSRC, ptVP8, 1001, fastPayload(1001, 100))) || w.count() != 2 {
		t.Fatalf("forwarded %d of the 2 good packets", w.count())
	}
	// The RTX stream has not decrypted yet.
	for i := range fastReleaseAfter - 1 {
		if !f.receive(other.seal(t, fastRTXSSRC, ptVP8RTX, uint16(i), fastPayload(1, 100))) {
			t.Fatalf("RTX packet %d not taken", i)
		}
	}
	if f.peer.stream(fastRTXSSRC) == nil {
		t.Fatalf("RTX stream released after %d failures", fastReleaseAfter-1)
	}
	f.receive(other.seal(t, fastRTXSSRC, ptVP8RTX, 500, fastPayload(1, 100)))
	if f.peer.stream(fastRTXSSRC) != nil || f.peer.stream(fastSSRC) == nil {
		t.Fatal("want the RTX stream released, the media stream kept")
	}
	if f.receive(f.seal(t, fastRTXSSRC, ptVP8RTX, 501, fastPayload(1, 100))) {
		t.Fatal("released stream's packet taken")
	}
	if st := f.tab.snapshot(); st.Released != 1 || st.AuthFailures != 2*fastReleaseAfter+fastReleaseAfter {
		t.Fatalf("counters %+v, want 1 released, %d authentication failures", st, 3*fastReleaseAfter)
	}
}

// The table: one address per peer, moves, refusals, removal.
func TestFastTableRegistration(t *testing.T) {
	tab := newFastTable(time.Hour)
	a, b := newFastPeer(tab), newFastPeer(tab)
	x := netip.MustParseAddrPort("[::ffff:10.0.0.1]:5000")
	y := netip.MustParseAddrPort("10.0.0.2:5000")
	if err := a.register(x); !errors.Is(err, errFastNoKeys) {
		t.Fatalf("register without keys: %v", err)
	}
	key, salt := make([]byte, 16), make([]byte, 14)
	for _, p := range []*fastPeer{a, b} {
		if err := p.setKeys(srtp.ProtectionProfileAes128CmHmacSha1_80, key, salt, nil); err != nil {
			t.Fatal(err)
		}
	}
	if a.register(x) != nil || (*tab.peers.Load())[netip.MustParseAddrPort("10.0.0.1:5000")] != a {
		t.Fatal("a not registered under the unmapped address")
	}
	if err := b.register(x); !errors.Is(err, errFastTaken) {
		t.Fatalf("b took a's address: %v", err)
	}
	if a.register(y) != nil || len(*tab.peers.Load()) != 1 || (*tab.peers.Load())[y] != a {
		t.Fatal("a did not move to y")
	}
	if b.register(x) != nil {
		t.Fatal("b cannot have the freed address")
	}
	a.close()
	if err := a.register(y); !errors.Is(err, errFastClosed) || len(*tab.peers.Load()) != 1 {
		t.Fatalf("closed peer registered: %v", err)
	}
	b.unregister()
	if len(*tab.peers.Load()) != 0 {
		t.Fatal("table not empty")
	}
}

// pion's read loop and the fast path forward into one upTrack at once;
// the race detector checks that they never run forward together.
func TestFastPathAndReadLoopExclusive(t *testing.T) {
	w := &payloadWriter{}
	f := newFastFixture(t, srtp.ProtectionProfileAes128CmHmacSha1_80, w)
	const n = 500
	fast := make([][]byte, n)
	for i := range fast {
		fast[i] = f.seal(t, fastSSRC, ptVP8, uint16(2*i), fastPayload(uint16(2*i), 200))
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for _, b := range fast {
			f.receive(b)
		}
	}()
	go func() { // as run does, with what pion still had buffered
		defer wg.Done()
		for i := range n {
			seq := uint16(2*i + 1)
			p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: ptVP8, SequenceNumber: seq, SSRC: fastSSRC},
				Payload: fastPayload(seq, 200)}
			raw, _ := p.Marshal()
			f.up.deliver(raw, false)
		}
	}()
	wg.Wait()
	if w.count() != 2*n {
		t.Fatalf("forwarded %d, want %d", w.count(), 2*n)
	}
}

// The fast path allocates nothing per packet.
func TestFastPathAllocatesNothing(t *testing.T) {
	f := newFastFixture(t, srtp.ProtectionProfileAeadAes128Gcm, &countingWriter{})
	from := netip.MustParseAddrPort("10.0.0.1:5000")
	if err := f.peer.register(from); err != nil {
		t.Fatal(err)
	}
	pkts := make([][]byte, 200)
	for i := range pkts {
		pkts[i] = f.seal(t, fastSSRC, ptVP8, uint16(i), fastPayload(uint16(i), 1000))
	}
	scratch := make([]byte, maxPacket)
	f.tab.handle(pkts[0], from, scratch, nil) // the SSRC's state in the SRTP context is made once
	i := 1
	allocs := testing.AllocsPerRun(100, func() {
		if v, _ := f.tab.handle(pkts[i], from, scratch, nil); v != taken {
			t.Fatal("not taken")
		}
		i++
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per packet", allocs)
	}
}

// Packets on the fast path are recorded for transport-wide congestion
// control feedback, as twccFeedback's pion reader records the others.
func TestFastPathRecordsTWCC(t *testing.T) {
	f := newFastFixture(t, srtp.ProtectionProfileAeadAes128Gcm, &countingWriter{})
	tw := &twccFeedback{start: time.Now(), rec: twcc.NewRecorder(1)}
	tw.extID.Store(3) // seal's transport-cc extension
	f.peer.twcc = tw
	for seq := uint16(100); seq < 105; seq++ {
		if !f.receive(f.seal(t, fastSSRC, ptVP8, seq, fastPayload(seq, 100))) {
			t.Fatal("not taken")
		}
	}
	pkts := tw.rec.BuildFeedbackPacket()
	if len(pkts) != 1 {
		t.Fatalf("%d feedback packets", len(pkts))
	}
	fb, ok := pkts[0].(*rtcp.TransportLayerCC)
	if !ok || fb.BaseSequenceNumber != 100 || fb.PacketStatusCount != 5 {
		t.Fatalf("feedback %+v", pkts[0])
	}
}

// A registration racing with close (pion's state callbacks run on their
// own goroutines) never leaves a closed peer in the table.
func TestFastPeerCloseWinsOverRegister(t *testing.T) {
	tab := newFastTable(time.Hour)
	key, salt := make([]byte, 16), make([]byte, 14)
	for i := range 200 {
		p := newFastPeer(tab)
		if err := p.setKeys(srtp.ProtectionProfileAes128CmHmacSha1_80, key, salt, nil); err != nil {
			t.Fatal(err)
		}
		addr := netip.AddrPortFrom(netip.MustParseAddr("10.0.0.1"), uint16(1000+i))
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.register(addr) }()
		p.close()
		wg.Wait()
		if len(*tab.peers.Load()) != 0 {
			t.Fatalf("round %d: a closed peer is in the table", i)
		}
	}
}

// The socket reader hands pion a copy of a taken packet every
// passPackets packets of a stream (and every passEvery): the packet as
// it came, which pion's own SRTP context decrypts, and which the track's
// read loop recognises and drops.
func TestFastPathPassesPionCopies(t *testing.T) {
	if got := newFastTable(5 * time.Second).passEvery; got != time.Second {
		t.Errorf("copy interval %v for a 5 s disconnected timeout, want 1 s", got)
	}
	if got := newFastTable(500 * time.Millisecond).passEvery; got != 125*time.Millisecond {
		t.Errorf("copy interval %v for a 500 ms disconnected timeout, want 125 ms", got)
	}
	w := &payloadWriter{}
	f := newFastFixture(t, srtp.ProtectionProfileAeadAes128Gcm, w)
	f.tab.passPackets = 8
	pion := f.pionContext(t)
	fc, cl := fastConnPair(t, f.tab, false)
	from := netip.MustParseAddrPort(cl.LocalAddr().String())
	if err := f.peer.register(from); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 8192)
	const packets = 40
	for seq := range uint16(packets) {
		sealed := f.seal(t, fastSSRC, ptVP8, seq, fastPayload(seq, 100))
		if _, err := cl.Write(sealed); err != nil {
			t.Fatal(err)
		}
		if seq%9 != 8 { // 8 taken, the 9th copied
			continue
		}
		_ = fc.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, addr, err := fc.ReadFromAddrPort(buf)
		if err != nil || addr != from || !bytes.Equal(buf[:n], sealed) {
			t.Fatalf("after seq %d pion read %d bytes from %v (%v), want the packet as sent", seq, n, addr, err)
		}
		plain, err := pion.DecryptRTP(nil, buf[:n], nil)
		if err != nil {
			t.Fatalf("pion cannot decrypt the copy of %d: %v", seq, err)
		}
		if !f.up.passedBack(plain) || f.up.passedBack(plain) {
			t.Fatalf("the read loop does not drop the copy of %d exactly once", seq)
		}
	}
	// The reader takes the last packets (already sent), then times out.
	_ = fc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _, err := fc.ReadFromAddrPort(buf); err == nil {
		t.Fatalf("pion read %d bytes, want nothing more", n)
	}
	if st := f.tab.snapshot(); st.Fast != packets || st.Passed != packets/9 || st.Fallback != 0 {
		t.Fatalf("counters %+v, want %d fast, %d copies", st, packets, packets/9)
	}
	// By time: with passEvery tiny, every other packet is copied.
	f.tab.passPackets, f.tab.passEvery = 1<<31, time.Nanosecond
	before := f.tab.snapshot().Passed
	for seq := uint16(packets); seq < packets+10; seq++ {
		f.receive(f.seal(t, fastSSRC, ptVP8, seq, fastPayload(seq, 100)))
	}
	if got := f.tab.snapshot().Passed - before; got != 5 {
		t.Fatalf("%d copies of 10 packets by time, want 5", got)
	}
}

// pionContext is a receiving SRTP context as pion's (replay window).
func (f *fastFixture) pionContext(t testing.TB) *srtp.Context {
	t.Helper()
	c, err := srtp.CreateContext(f.key, f.salt, f.prof, srtp.SRTPReplayProtection(srtpReplayWindow))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// pion can take a stream back after the fast path carried it for 70,000
// packets (past a rollover of the sequence number): the copies kept its
// SRTP context in step. Without them its rollover counter guess is wrong
// and every packet fails (the control).
func TestPionTakesBackALongFastStream(t *testing.T) {
	for _, copies := range []bool{true, false} {
		t.Run(fmt.Sprintf("copies=%v", copies), func(t *testing.T) {
			f := newFastFixture(t, srtp.ProtectionProfileAeadAes128Gcm, &countingWriter{})
			f.tab.passPackets = fastPassPackets
			if !copies {
				f.tab.passPackets = 1 << 31
			}
			pion := f.pionContext(t)
			from := netip.MustParseAddrPort("10.0.0.1:5000")
			buf, scratch := make([]byte, maxPacket), make([]byte, maxPacket)
			seq := uint16(60000)
			// pion decrypts what the fast path does not take, and the copies.
			send := func() (verdict, error) {
				n := copy(buf, f.seal(t, fastSSRC, ptVP8, seq, fastPayload(seq, 20)))
				seq++
				v, c := f.tab.handle(buf[:n], from, scratch, nil)
				switch v {
				case toPion:
					_, err := pion.DecryptRTP(nil, buf[:n], nil)
					return v, err
				case takenPass:
					_, err := pion.DecryptRTP(nil, scratch[:c], nil)
					return v, err
				}
				return v, nil
			}
			for range 10 { // before the peer is registered
				if _, err := send(); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.peer.register(from); err != nil {
				t.Fatal(err)
			}
			for i := range 70000 {
				if v, err := send(); v == toPion || err != nil {
					t.Fatalf("packet %d: %v, %v", i, v, err)
				}
			}
			f.peer.unregister()
			failed := 0
			for range 100 {
				if _, err := send(); err != nil {
					failed++
				}
			}
			t.Logf("copies %v: pion failed %d of 100 packets after the fast path's 70,000 (%d copies)",
				copies, failed, f.tab.snapshot().Passed)
			if copies && failed != 0 {
				t.Fatalf("pion failed %d of 100 packets, want 0", failed)
			}
			if !copies && failed == 0 {
				t.Fatal("without copies pion still decrypts: the test does not test")
			}
		})
	}
}
