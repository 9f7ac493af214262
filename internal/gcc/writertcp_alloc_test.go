package gcc

import (
	"testing"
	"time"

	"github.com/pion/rtcp"
)

// WriteRTCP unpacks each transport-cc feedback into a slice it reuses
// (the controllers copy what they keep): a steady stream of feedback
// allocates nothing per feedback once the slice has grown.
func TestWriteRTCPReusesAcks(t *testing.T) {
	e, err := NewSendSideBWE()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.Close() }()
	start := time.Now()
	sendTWCC(t, e.feedbackAdapter, start, 0, 200)
	recv := uint16(rtcp.TypeTCCPacketReceivedSmallDelta)
	base := uint16(0)
	feedback := func() []rtcp.Packet {
		fb := &rtcp.TransportLayerCC{BaseSequenceNumber: base, PacketStatusCount: 30, ReferenceTime: 1,
			PacketChunks: []rtcp.PacketStatusChunk{&rtcp.RunLengthChunk{PacketStatusSymbol: recv, RunLength: 30}}}
		for range 30 {
			fb.RecvDeltas = append(fb.RecvDeltas, &rtcp.RecvDelta{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 1000})
		}
		base = (base + 30) % 180
		return []rtcp.Packet{fb}
	}
	fbs := make([][]rtcp.Packet, 64)
	for i := range fbs {
		fbs[i] = feedback()
	}
	i := 0
	allocs := testing.AllocsPerRun(200, func() {
		if err := e.WriteRTCP(fbs[i%len(fbs)], nil); err != nil {
			t.Fatal(err)
		}
		i++
	})
	t.Logf("%.1f allocations per feedback of 30 packets", allocs)
	if allocs > 0 && !raceEnabled {
		t.Errorf("%.1f allocations per feedback, want 0", allocs)
	}
}
