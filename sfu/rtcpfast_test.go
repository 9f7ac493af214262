package sfu

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
)

// rtcpFixture is the SFU's real interceptor chain with the RTCP fast
// path's injector and catcher, one outgoing video stream (SSRC 222, RTX
// 223) whose packets are counted, and pion's RTCP readers replaced by one
// that must never be called.
type rtcpFixture struct {
	hooks *peerHooks
	write interceptor.RTPWriter
	sent  int
}

var errPionRead = errors.New("pion's RTCP reader was called")

func newRTCPFixture(t *testing.T) *rtcpFixture {
	t.Helper()
	est, rep := &estimators{}, &repairCounters{}
	f := &rtcpFixture{hooks: &peerHooks{}}
	reg, err := newRegistry(est, rep, f.hooks, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := reg.Build("rtcp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ic.Close()
		if e := est.take("rtcp"); e != nil {
			_ = e.Close()
		}
	})
	ic.BindRTCPWriter(discardRTCP{})
	pion := func(name string) interceptor.RTCPReader {
		return interceptor.RTCPReaderFunc(func([]byte, interceptor.Attributes) (int, interceptor.Attributes, error) {
			t.Errorf("%s: %v", name, errPionRead)
			return 0, nil, errPionRead
		})
	}
	ic.BindRTCPReader(pion("first reader"))
	first := f.hooks.rtcp.Load()
	ic.BindRTCPReader(pion("second reader"))
	if first == nil || f.hooks.rtcp.Load() != first {
		t.Fatal("the catcher did not keep the first chain bound")
	}
	f.write = ic.BindLocalStream(&interceptor.StreamInfo{
		SSRC: 222, SSRCRetransmission: 223, PayloadType: ptVP8, PayloadTypeRetransmission: ptVP8RTX,
		MimeType: webrtc.MimeTypeVP8, ClockRate: 90000,
		RTPHeaderExtensions: []interceptor.RTPHeaderExtension{{ID: 3, URI: transportCCURI}},
		RTCPFeedback:        []interceptor.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "transport-cc"}},
	}, interceptor.RTPWriterFunc(func(_ *rtp.Header, payload []byte, _ interceptor.Attributes) (int, error) {
		f.sent++
		return len(payload), nil
	}))
	return f
}

// inject runs pkt through the caught chain as the fast path does.
func (f *rtcpFixture) inject(t *testing.T, pkt rtcp.Packet) []rtcp.Packet {
	t.Helper()
	raw, err := pkt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	buf := append([]byte(nil), raw...)
	n, attrs, err := f.hooks.rtcp.Load().r.Read(buf, interceptor.Attributes{rtcpInjectKey{}: &raw})
	if err != nil {
		t.Fatal(err)
	}
	pkts, err := attrs.GetRTCPPackets(buf[:n])
	if err != nil || len(pkts) != 1 {
		t.Fatalf("%d packets, %v", len(pkts), err)
	}
	return pkts
}

// Every interceptor passes the attributes down, so a call of the caught
// chain returns the injected packet without reading pion's stream, and
// the interceptors act on it: the NACK responder resends what it names.
func TestRTCPChainCarriesInjectedPacket(t *testing.T) {
	f := newRTCPFixture(t)
	for seq := range uint16(10) {
		h := &rtp.Header{Version: 2, PayloadType: ptVP8, SequenceNumber: seq, Timestamp: 3000, SSRC: 222}
		if _, err := f.write.Write(h, make([]byte, 1000), nil); err != nil {
			t.Fatal(err)
		}
	}
	before := f.sent
	nack := &rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: 222, Nacks: []rtcp.NackPair{{PacketID: 3, LostPackets: 0b11}}}
	pkts := f.inject(t, nack)
	if got, ok := pkts[0].(*rtcp.TransportLayerNack); !ok || got.MediaSSRC != 222 {
		t.Fatalf("the chain returned %v", pkts[0])
	}
	if resent := f.sent - before; resent != 3 {
		t.Errorf("the NACK responder resent %d packets, want 3 (seq 3, 4, 5)", resent)
	}
	f.inject(t, &rtcp.PictureLossIndication{SenderSSRC: 1, MediaSSRC: 222})
}

// sealRTCP encrypts pkt as the remote peer would.
func sealRTCP(t *testing.T, ctx *srtp.Context, pkts ...rtcp.Packet) []byte {
	t.Helper()
	raw, err := rtcp.Marshal(pkts)
	if err != nil {
		t.Fatal(err)
	}
	out, err := ctx.EncryptRTCP(nil, raw, nil)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// The socket reader takes a registered peer's SRTCP: a PLI about what it
// is sent reaches that down track, a sender report about what it
// publishes reaches that up track; a forged packet is dropped and
// counted; pion is left one packet per rtcpPassEvery.
func TestRTCPFastPathDispatches(t *testing.T) {
	f := newFastFixture(t, srtp.ProtectionProfileAeadAes128Gcm, &payloadWriter{})
	chain := newRTCPFixture(t)
	d := newDownTrack(webrtc.RTPCodecTypeVideo, "s", nil)
	d.ssrc = 222
	f.peer.rtcp = &rtcpTargets{chain: chain.hooks.rtcp.Load, down: []*downTrack{d}}
	take := func(pkt rtcp.Packet) bool {
		return f.peer.receiveRTCP(sealRTCP(t, f.tx, pkt))
	}

	if !take(&rtcp.PictureLossIndication{SenderSSRC: fastSSRC, MediaSSRC: 222}) {
		t.Fatal("a PLI went to pion")
	}
	if got := d.stats.plis.Load(); got != 1 {
		t.Errorf("down track saw %d PLIs, want 1", got)
	}
	sr := &rtcp.SenderReport{SSRC: fastSSRC, NTPTime: 0x1234_5678_9abc_def0, RTPTime: 90000}
	if !take(sr) {
		t.Fatal("a sender report went to pion")
	}
	f.up.rx.srMu.Lock()
	lsr := f.up.rx.lsr
	f.up.rx.srMu.Unlock()
	if want := uint32(sr.NTPTime >> 16); lsr != want {
		t.Errorf("up track's last sender report %#x, want %#x", lsr, want)
	}
	if !take(&rtcp.PictureLossIndication{SenderSSRC: fastSSRC, MediaSSRC: 999}) {
		t.Error("a PLI for an unknown SSRC went to pion (pion drops it too)")
	}

	forged := sealRTCP(t, f.tx, &rtcp.PictureLossIndication{SenderSSRC: fastSSRC, MediaSSRC: 222})
	forged[len(forged)-1] ^= 1
	if !f.peer.receiveRTCP(forged) {
		t.Error("a forged packet went to pion")
	}
	st := f.tab.snapshot()
	if st.RTCP != 3 || st.RTCPFailures != 1 || st.RTCPPassed != 0 || d.stats.plis.Load() != 1 {
		t.Errorf("stats %+v, %d PLIs; want 3 fast, 1 failure, none passed, 1 PLI", st, d.stats.plis.Load())
	}

	// A replay is dropped, as pion's SRTCP context drops it.
	pli := sealRTCP(t, f.tx, &rtcp.PictureLossIndication{SenderSSRC: fastSSRC, MediaSSRC: 222})
	replay := append([]byte(nil), pli...)
	if !f.peer.receiveRTCP(pli) || !f.peer.receiveRTCP(replay) {
		t.Error("a PLI or its replay went to pion")
	}
	if got, dropped := d.stats.plis.Load(), f.tab.snapshot().RTCPDropped; got != 2 || dropped != 1 {
		t.Errorf("after a PLI and its replay: %d PLIs, %d dropped; want 2, 1", got, dropped)
	}

	f.tab.rtcpPassEvery = 0
	if take(&rtcp.PictureLossIndication{SenderSSRC: fastSSRC, MediaSSRC: 222}) {
		t.Error("with rtcpPassEvery 0 the packet was not left to pion")
	}
	f.tab.rtcpPassEvery = time.Hour
	if got := f.tab.snapshot().RTCPPassed; got != 1 {
		t.Errorf("RTCPPassed %d, want 1", got)
	}

	f.peer.rtcp = &rtcpTargets{chain: func() *rtcpChain { return nil }}
	if take(&rtcp.PictureLossIndication{SenderSSRC: fastSSRC, MediaSSRC: 222}) {
		t.Error("before pion bound a chain the packet was taken")
	}
}

// In a call, the clients' RTCP (reports, transport-wide feedback, PLIs)
// takes the RTCP fast path, and a subscriber's PLI still reaches the
// publisher.
func TestRTCPFastPathInCall(t *testing.T) {
	s := newTestSFU(t)
	s.fast.rtcpPassEvery = time.Hour // pion keeps its ICE traffic from the RTP copies
	a, b := fastCall(t, s, rtctest.Options{})
	if _, ok := waitUntil(func() bool { return s.ReceivePath().RTCP > 20 }, 10*time.Second); !ok {
		t.Fatalf("RTCP fast path: %+v", s.ReceivePath())
	}
	plis := a.KeyframeRequests()
	if err := b.SendPLI(); err != nil {
		t.Fatal(err)
	}
	if _, ok := waitUntil(func() bool { return a.KeyframeRequests() > plis }, 10*time.Second); !ok {
		t.Fatal("bob's PLI did not reach alice")
	}
	moreVideo(t, 50, a, b)
	st := s.ReceivePath()
	t.Logf("receive path %+v", st)
	if st.RTCPFailures != 0 || st.RTCPPassed != 0 {
		t.Errorf("%d RTCP failures, %d passed to pion; want 0, 0", st.RTCPFailures, st.RTCPPassed)
	}
	checkClean(t, a)
	checkClean(t, b)
}

// Each down track is told only the packets of a compound one that name
// it (as pion writes them to each stream's reader), each once.
func TestRTCPFastPathSplitsCompound(t *testing.T) {
	f := newFastFixture(t, srtp.ProtectionProfileAes128CmHmacSha1_80, &payloadWriter{})
	chain := newRTCPFixture(t)
	audio, video := newDownTrack(webrtc.RTPCodecTypeAudio, "s", nil), newDownTrack(webrtc.RTPCodecTypeVideo, "s", nil)
	audio.ssrc, video.ssrc = 111, 222
	f.peer.rtcp = &rtcpTargets{chain: chain.hooks.rtcp.Load, down: []*downTrack{audio, video}}
	compound := []rtcp.Packet{
		&rtcp.ReceiverReport{SSRC: fastSSRC, Reports: []rtcp.ReceptionReport{{SSRC: 111}, {SSRC: 222}}},
		&rtcp.TransportLayerNack{SenderSSRC: fastSSRC, MediaSSRC: 222, Nacks: []rtcp.NackPair{{PacketID: 7, LostPackets: 1}}},
		&rtcp.PictureLossIndication{SenderSSRC: fastSSRC, MediaSSRC: 222},
	}
	if !f.peer.receiveRTCP(sealRTCP(t, f.tx, compound...)) {
		t.Fatal("the compound packet went to pion")
	}
	if a, v := &audio.stats, &video.stats; a.nacks.Load() != 0 || a.plis.Load() != 0 || v.nacks.Load() != 2 || v.plis.Load() != 1 {
		t.Errorf("audio %d NACKed, %d PLIs; video %d NACKed, %d PLIs; want 0, 0, 2, 1",
			a.nacks.Load(), a.plis.Load(), v.nacks.Load(), v.plis.Load())
	}
	if audio.lastRTCP.Load() == 0 || video.lastRTCP.Load() == 0 {
		t.Error("a track named by the receiver report was not told")
	}
}

// The caught chain is called by media readers while pion's reader
// goroutine reads through the same one: NACKs from both are answered,
// with no data race (-race).
func TestRTCPChainConcurrentWithPion(t *testing.T) {
	est, rep := &estimators{}, &repairCounters{}
	hooks := &peerHooks{}
	reg, err := newRegistry(est, rep, hooks, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := reg.Build("race")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = ic.Close()
		if e := est.take("race"); e != nil {
			_ = e.Close()
		}
	})
	ic.BindRTCPWriter(discardRTCP{})
	nack, err := (&rtcp.TransportLayerNack{SenderSSRC: 1, MediaSSRC: 222, Nacks: []rtcp.NackPair{{PacketID: 1, LostPackets: 0b1111}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	pion := ic.BindRTCPReader(interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		return copy(b, nack), a, nil
	}))
	var sent atomic.Int64
	w := ic.BindLocalStream(&interceptor.StreamInfo{SSRC: 222, PayloadType: ptVP8, MimeType: webrtc.MimeTypeVP8, ClockRate: 90000,
		RTCPFeedback: []interceptor.RTCPFeedback{{Type: "nack"}}},
		interceptor.RTPWriterFunc(func(_ *rtp.Header, payload []byte, _ interceptor.Attributes) (int, error) {
			sent.Add(1)
			return len(payload), nil
		}))
	for seq := range uint16(8) {
		if _, err := w.Write(&rtp.Header{Version: 2, PayloadType: ptVP8, SequenceNumber: seq, SSRC: 222}, make([]byte, 500), nil); err != nil {
			t.Fatal(err)
		}
	}
	caught := hooks.rtcp.Load()
	const rounds = 200
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1500)
			for range rounds {
				var err error
				if g == 0 {
					_, _, err = pion.Read(buf, nil) // pion's reader goroutine
				} else {
					in := append([]byte(nil), nack...)
					_, _, err = caught.r.Read(buf, interceptor.Attributes{rtcpInjectKey{}: &in})
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if got := sent.Load() - 8; got == 0 {
		t.Error("no NACK was answered")
	}
}
