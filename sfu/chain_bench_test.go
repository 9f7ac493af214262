package sfu

import (
	"testing"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// serverChain is the SFU's interceptor chain for one PeerConnection, as
// newRegistry builds it, with one incoming and one outgoing video
// stream bound and no network below: what pion's PeerConnection runs per
// packet on the way in (after SRTP) and on the way out (before SRTP).
type serverChain struct {
	ic    interceptor.Interceptor
	read  interceptor.RTPReader
	write interceptor.RTPWriter
	src   *loopReader
	sent  int
	in    rtp.Header // the read loop's parsed header, reused
}

// loopReader returns the same packet on every Read, with a new sequence
// number and transport-wide sequence number each time.
type loopReader struct {
	pkt []byte
	seq uint16
}

func (l *loopReader) Read(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
	l.seq++
	l.pkt[2], l.pkt[3] = byte(l.seq>>8), byte(l.seq)
	n := copy(b, l.pkt)
	// The transport-cc extension's value: the last two bytes of the
	// one-byte extension block (12-byte header, 4-byte profile, id/len).
	b[17], b[18] = byte(l.seq>>8), byte(l.seq)
	return n, a, nil
}

type discardRTCP struct{}

func (discardRTCP) Write(pkts []rtcp.Packet, _ interceptor.Attributes) (int, error) {
	return len(pkts), nil
}

func newServerChain(tb testing.TB) *serverChain {
	tb.Helper()
	est, rep := &estimators{}, &repairCounters{}
	reg, err := newRegistry(est, rep, nil, nil, false)
	if err != nil {
		tb.Fatal(err)
	}
	ic, err := reg.Build("bench")
	if err != nil {
		tb.Fatal(err)
	}
	c := &serverChain{ic: ic}
	tb.Cleanup(func() {
		_ = ic.Close()
		if e := est.take("bench"); e != nil {
			_ = e.Close()
		}
	})
	ic.BindRTCPWriter(discardRTCP{})
	info := func(ssrc, rtx uint32) *interceptor.StreamInfo {
		return &interceptor.StreamInfo{
			SSRC: ssrc, SSRCRetransmission: rtx, PayloadType: ptVP8, PayloadTypeRetransmission: ptVP8RTX,
			MimeType: webrtc.MimeTypeVP8, ClockRate: 90000,
			RTPHeaderExtensions: []interceptor.RTPHeaderExtension{{ID: 3, URI: transportCCURI}},
			RTCPFeedback: []interceptor.RTCPFeedback{{Type: "goog-remb"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"},
				{Type: "transport-cc"}},
		}
	}
	in := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: ptVP8, Timestamp: 3000, SSRC: 111}, Payload: make([]byte, 1100)}
	if err := in.SetExtension(3, []byte{0, 0}); err != nil {
		tb.Fatal(err)
	}
	raw, err := in.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	c.src = &loopReader{pkt: raw}
	c.read = ic.BindRemoteStream(info(111, 112), c.src)
	c.write = ic.BindLocalStream(info(222, 223), interceptor.RTPWriterFunc(
		func(_ *rtp.Header, payload []byte, _ interceptor.Attributes) (int, error) {
			c.sent++
			return len(payload), nil
		}))
	return c
}

// BenchmarkServerChain measures pion's and the SFU's interceptors for one
// forwarded video packet: read through the incoming chain (TWCC feedback
// recording; receiver reports are counted in forward), written through the
// outgoing one (TWCC sequence number, GCC's send history and the prober's,
// sender reports, the NACK responder's copy, repair counters).
func BenchmarkServerChain(b *testing.B) {
	c := newServerChain(b)
	buf := make([]byte, 1500)
	var out rtp.Header
	ext := make([]rtp.Extension, 0, 4)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c.forward(b, buf, &out, ext)
	}
}

func (c *serverChain) forward(tb testing.TB, buf []byte, out *rtp.Header, ext []rtp.Extension) {
	n, _, err := c.read.Read(buf, nil)
	if err != nil {
		tb.Fatal(err)
	}
	in := &c.in
	hl, err := in.Unmarshal(buf[:n])
	if err != nil {
		tb.Fatal(err)
	}
	*out = rtp.Header{Version: 2, Marker: in.Marker, PayloadType: ptVP8, SequenceNumber: in.SequenceNumber,
		Timestamp: in.Timestamp, SSRC: 222, Extensions: ext[:0]}
	if _, err := c.write.Write(out, buf[hl:n], nil); err != nil {
		tb.Fatal(err)
	}
}

// TestServerChainAllocatesNothing: a forwarded packet costs no heap
// allocation in the interceptor chain (pion's defaults cost ~15).
func TestServerChainAllocatesNothing(t *testing.T) {
	c := newServerChain(t)
	buf := make([]byte, 1500)
	var out rtp.Header
	ext := make([]rtp.Extension, 0, 4)
	for range 100 { // warm up: maps and slices reach their size
		c.forward(t, buf, &out, ext)
	}
	if n := testing.AllocsPerRun(1000, func() { c.forward(t, buf, &out, ext) }); n != 0 {
		t.Errorf("%v allocations per forwarded packet, want 0", n)
	}
	if c.sent < 1100 {
		t.Errorf("%d packets came out of the chain, want 1100", c.sent)
	}
}

// BenchmarkServerChainRead measures the incoming half alone: one video
// packet read through the chain pion runs between SRTP and the track.
func BenchmarkServerChainRead(b *testing.B) {
	c := newServerChain(b)
	buf := make([]byte, 1500)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, _, err := c.read.Read(buf, nil); err != nil {
			b.Fatal(err)
		}
	}
}
