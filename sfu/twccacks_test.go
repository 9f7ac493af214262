package sfu

import (
	"math/rand/v2"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"videochat/internal/gcc"
)

// randomFeedback reports statuses for count packets from base: received
// (small or large delta) or not, in run-length and status vector chunks.
func randomFeedback(r *rand.Rand, base, count uint16) *rtcp.TransportLayerCC {
	fb := &rtcp.TransportLayerCC{BaseSequenceNumber: base, PacketStatusCount: count, ReferenceTime: uint32(r.IntN(1000))}
	symbol := func() uint16 {
		switch r.IntN(4) {
		case 0:
			return rtcp.TypeTCCPacketNotReceived
		case 1:
			return rtcp.TypeTCCPacketReceivedLargeDelta
		}
		return rtcp.TypeTCCPacketReceivedSmallDelta
	}
	addDelta := func(s uint16) {
		if s != rtcp.TypeTCCPacketNotReceived {
			fb.RecvDeltas = append(fb.RecvDeltas, &rtcp.RecvDelta{Type: s, Delta: int64(r.IntN(64)) * 250})
		}
	}
	for left := int(count); left > 0; {
		if r.IntN(2) == 0 {
			n := min(left, 1+r.IntN(20))
			s := symbol()
			fb.PacketChunks = append(fb.PacketChunks, &rtcp.RunLengthChunk{PacketStatusSymbol: s, RunLength: uint16(n)})
			for range n {
				addDelta(s)
			}
			left -= n
			continue
		}
		c := &rtcp.StatusVectorChunk{SymbolSize: rtcp.TypeTCCSymbolSizeTwoBit}
		for i := range 7 {
			s := uint16(rtcp.TypeTCCPacketNotReceived) // padding past the count
			if i < left {
				s = symbol()
				addDelta(s)
			}
			c.SymbolList = append(c.SymbolList, s)
		}
		fb.PacketChunks = append(fb.PacketChunks, c)
		left -= min(left, 7)
	}
	return fb
}

// The send history unpacks a feedback into the acknowledgments GCC's own
// feedback adapter makes from the same packets sent (sizes without RTP
// padding, departure and arrival times, not-received statuses), over
// random feedback across the sequence number wrap.
func TestFeedbackAcksMatchGCCAdapter(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 11))
	base := time.Now()
	var h sendHistory
	ad := gcc.NewFeedbackAdapter()
	attrs := interceptor.Attributes{gcc.TwccExtensionAttributesKey: uint8(3)}
	seq := uint16(65000)
	var buf []gcc.Acknowledgment
	for round := range 200 {
		first := seq
		sent := 5 + r.IntN(40)
		for range sent {
			at := time.Duration(round)*100*time.Millisecond + time.Duration(r.IntN(100))*time.Millisecond
			payload, pad := 200+r.IntN(1000), uint8(0)
			if r.IntN(8) == 0 {
				payload, pad = 0, uint8(1+r.IntN(255))
			}
			hdr := rtp.Header{Version: 2, SSRC: 9, Padding: pad > 0, PaddingSize: pad}
			if err := hdr.SetExtension(3, []byte{byte(seq >> 8), byte(seq)}); err != nil {
				t.Fatal(err)
			}
			h.onSent(seq, hdr.MarshalSize()+payload+int(pad), pad, at, 0)
			if err := ad.OnSent(base.Add(at), &hdr, payload, attrs); err != nil {
				t.Fatal(err)
			}
			seq++
		}
		fb := randomFeedback(r, first, uint16(sent))
		want, err := ad.OnTransportCCFeedback(time.Now(), fb)
		if err != nil {
			t.Fatal(err)
		}
		buf = buf[:0]
		if !h.feedbackAcks(fb, &buf, base) {
			t.Fatalf("round %d: feedback taken as malformed", round)
		}
		if len(buf) != len(want) {
			t.Fatalf("round %d: %d acknowledgments, the adapter %d", round, len(buf), len(want))
		}
		for i := range want {
			g, w := buf[i], want[i]
			if g.SequenceNumber != w.SequenceNumber || g.Size != w.Size || !g.Departure.Equal(w.Departure) || !g.Arrival.Equal(w.Arrival) {
				t.Fatalf("round %d, ack %d: %+v, the adapter %+v", round, i, g, w)
			}
		}
	}
}

// A packet not in the history gets a zero acknowledgment (counted lost,
// as the adapter does) and still uses its arrival delta; more received
// statuses than deltas make the feedback malformed.
func TestFeedbackAcksUnknownAndMalformed(t *testing.T) {
	var h sendHistory
	base := time.Now()
	h.onSent(11, 1000, 0, time.Second, 0)
	recv := uint16(rtcp.TypeTCCPacketReceivedSmallDelta)
	fb := &rtcp.TransportLayerCC{BaseSequenceNumber: 10, PacketStatusCount: 2, ReferenceTime: 1,
		PacketChunks: []rtcp.PacketStatusChunk{&rtcp.RunLengthChunk{PacketStatusSymbol: recv, RunLength: 2}},
		RecvDeltas:   []*rtcp.RecvDelta{{Type: recv, Delta: 1000}, {Type: recv, Delta: 2000}}}
	var acks []gcc.Acknowledgment
	if !h.feedbackAcks(fb, &acks, base) || len(acks) != 2 {
		t.Fatalf("%d acks", len(acks))
	}
	if acks[0] != (gcc.Acknowledgment{}) {
		t.Errorf("unknown packet: %+v", acks[0])
	}
	wantArrival := time.Time{}.Add(64*time.Millisecond + 3*time.Millisecond)
	if acks[1].SequenceNumber != 11 || !acks[1].Arrival.Equal(wantArrival) || !acks[1].Departure.Equal(base.Add(time.Second)) {
		t.Errorf("known packet: %+v, want arrival %v", acks[1], wantArrival)
	}
	fb.RecvDeltas = fb.RecvDeltas[:1]
	acks = acks[:0]
	if h.feedbackAcks(fb, &acks, base) {
		t.Error("a feedback short of deltas was not taken as malformed")
	}
}

// A feedback claiming more statuses than the history holds is cut at the
// history's length: a hostile count builds no megabytes of acknowledgments.
func TestFeedbackAcksBounded(t *testing.T) {
	var h sendHistory
	fb := &rtcp.TransportLayerCC{BaseSequenceNumber: 0, PacketStatusCount: 65535,
		PacketChunks: []rtcp.PacketStatusChunk{&rtcp.RunLengthChunk{PacketStatusSymbol: rtcp.TypeTCCPacketNotReceived, RunLength: 8191}}}
	for range 8 {
		fb.PacketChunks = append(fb.PacketChunks, fb.PacketChunks[0])
	}
	var acks []gcc.Acknowledgment
	if !h.feedbackAcks(fb, &acks, time.Now()) || len(acks) != historySize {
		t.Fatalf("%d acknowledgments, want %d", len(acks), historySize)
	}
}
