package gcc

import (
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// sendTWCC records packets numbered first..last-1 as sent, one ms apart.
func sendTWCC(t *testing.T, f *FeedbackAdapter, start time.Time, first, last uint16) {
	t.Helper()
	attrs := interceptor.Attributes{TwccExtensionAttributesKey: uint8(1)}
	for seq := first; seq != last; seq++ {
		h := rtp.Header{Version: 2, SSRC: 5}
		if err := h.SetExtension(1, []byte{byte(seq >> 8), byte(seq)}); err != nil {
			t.Fatal(err)
		}
		if err := f.OnSent(start.Add(time.Duration(seq)*time.Millisecond), &h, 1000, attrs); err != nil {
			t.Fatal(err)
		}
	}
}

// The ring answers feedback for the last 256 transport-wide sequence
// numbers sent, across the 16-bit wrap, and nothing older.
func TestFeedbackHistoryRing(t *testing.T) {
	f := NewFeedbackAdapter()
	start := time.Unix(1000, 0)
	sendTWCC(t, f, start, 65000, 200) // 736 packets, across the wrap
	fb := &rtcp.TransportLayerCC{
		BaseSequenceNumber: 65500, PacketStatusCount: 240,
		PacketChunks: []rtcp.PacketStatusChunk{&rtcp.RunLengthChunk{
			PacketStatusSymbol: rtcp.TypeTCCPacketReceivedSmallDelta, RunLength: 240,
		}},
	}
	for range 240 {
		fb.RecvDeltas = append(fb.RecvDeltas, &rtcp.RecvDelta{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 1000})
	}
	acks, err := f.OnTransportCCFeedback(time.Now(), fb)
	if err != nil {
		t.Fatal(err)
	}
	if len(acks) != 240 {
		t.Fatalf("%d acks, want 240", len(acks))
	}
	found := 0
	for i, a := range acks {
		seq := uint16(65500 + i)
		if a.Departure.IsZero() {
			continue // not sent
		}
		found++
		if a.SequenceNumber != seq || a.Size != 1000+12+8 {
			t.Errorf("ack %d: seq %d size %d", i, a.SequenceNumber, a.Size)
		}
		if want := start.Add(time.Duration(seq) * time.Millisecond); !a.Departure.Equal(want) {
			t.Errorf("ack %d: departure %v, want %v", i, a.Departure, want)
		}
	}
	// The ring keeps 65480..199; the feedback covers 65500..203, of which
	// 200..203 were never sent.
	if want := 236; found != want {
		t.Errorf("%d acks matched a sent packet, want %d (the last 256 sent)", found, want)
	}

	// 65400..65479 were sent but have left the ring.
	fb.BaseSequenceNumber, fb.PacketStatusCount = 65400, 80
	fb.PacketChunks = []rtcp.PacketStatusChunk{&rtcp.RunLengthChunk{
		PacketStatusSymbol: rtcp.TypeTCCPacketReceivedSmallDelta, RunLength: 80,
	}}
	fb.RecvDeltas = fb.RecvDeltas[:80]
	if acks, err = f.OnTransportCCFeedback(time.Now(), fb); err != nil {
		t.Fatal(err)
	}
	for i, a := range acks {
		if !a.Departure.IsZero() {
			t.Fatalf("ack %d (seq %d) matched a packet no longer remembered", i, 65400+i)
		}
	}
}

func TestFeedbackHistoryAddAllocatesNothing(t *testing.T) {
	f := NewFeedbackAdapter()
	attrs := interceptor.Attributes{TwccExtensionAttributesKey: uint8(1)}
	h := rtp.Header{Version: 2, Extensions: make([]rtp.Extension, 0, 1)}
	var seq uint16
	ext := make([]byte, 2)
	now := time.Now()
	if n := testing.AllocsPerRun(1000, func() {
		seq++
		ext[0], ext[1] = byte(seq>>8), byte(seq)
		_ = h.SetExtension(1, ext)
		_ = f.OnSent(now, &h, 1000, attrs)
	}); n > 0 {
		t.Errorf("%v allocations per packet sent", n)
	}
}

// The padding of the last status vector chunk (past PacketStatusCount)
// reports nothing: packets sent after the feedback was built are not
// counted as lost.
func TestFeedbackPaddingIsNotLoss(t *testing.T) {
	f := NewFeedbackAdapter()
	start := time.Unix(1000, 0)
	sendTWCC(t, f, start, 10, 30) // 10..29 sent; the feedback covers 10..12
	recv := uint16(rtcp.TypeTCCPacketReceivedSmallDelta)
	fb := &rtcp.TransportLayerCC{
		BaseSequenceNumber: 10, PacketStatusCount: 3, ReferenceTime: 1,
		PacketChunks: []rtcp.PacketStatusChunk{&rtcp.StatusVectorChunk{
			SymbolSize: rtcp.TypeTCCSymbolSizeOneBit,
			SymbolList: []uint16{recv, recv, recv, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		}},
		RecvDeltas: []*rtcp.RecvDelta{
			{Type: recv, Delta: 1000}, {Type: recv, Delta: 1000}, {Type: recv, Delta: 1000},
		},
	}
	acks, err := f.OnTransportCCFeedback(time.Now(), fb)
	if err != nil {
		t.Fatal(err)
	}
	if len(acks) != 3 {
		t.Fatalf("%d acknowledgments for 3 statuses", len(acks))
	}
	for i, a := range acks {
		if a.SequenceNumber != uint16(10+i) || a.Arrival.IsZero() {
			t.Errorf("ack %d: %+v", i, a)
		}
	}
}
