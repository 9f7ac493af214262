package sfu

import (
	"bytes"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// rawExtension agrees with pion's parser on every packet pion accepts.
func FuzzRawExtension(f *testing.F) {
	for _, twoByte := range []bool{false, true} {
		h := rtp.Header{Version: 2, SSRC: 1, CSRC: []uint32{7}}
		if twoByte {
			h.ExtensionProfile = 0x1000
		}
		_ = h.SetExtension(3, []byte{1, 2})
		_ = h.SetExtension(5, []byte{9, 9, 9})
		raw, _ := (&rtp.Packet{Header: h, Payload: []byte{1, 2, 3}}).Marshal()
		f.Add(raw)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var h rtp.Header
		if _, err := h.Unmarshal(b); err != nil {
			_ = rawExtension(b, 3) // must not panic
			return
		}
		for _, id := range []uint8{1, 3, 5, 14} {
			if got, want := rawExtension(b, id), h.GetExtension(id); !bytes.Equal(got, want) {
				t.Fatalf("extension %d: got %x, pion %x", id, got, want)
			}
		}
	})
}

type rtcpSink struct{ ch chan []rtcp.Packet }

func (s rtcpSink) Write(pkts []rtcp.Packet, _ interceptor.Attributes) (int, error) {
	s.ch <- pkts
	return 0, nil
}

// rawReader returns the packets given, one per Read.
type rawReader struct{ pkts [][]byte }

func (r *rawReader) Read(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
	n := copy(b, r.pkts[0])
	r.pkts = r.pkts[1:]
	return n, a, nil
}

// TestTWCCFeedbackReportsArrivals: packets read are acknowledged in the
// next feedback, recording allocates nothing, Close ends the goroutine.
func TestTWCCFeedbackReportsArrivals(t *testing.T) {
	i, _ := twccFeedbackFactory{}.NewInterceptor("")
	tw := i.(*twccFeedback)
	sink := rtcpSink{ch: make(chan []rtcp.Packet, 100)}
	tw.BindRTCPWriter(sink)
	defer func() { _ = tw.Close() }()
	info := &interceptor.StreamInfo{SSRC: 1234, RTPHeaderExtensions: []interceptor.RTPHeaderExtension{{ID: 3, URI: transportCCURI}}}
	src := &rawReader{}
	r := tw.BindRemoteStream(info, src)
	buf := make([]byte, 1500)
	for seq := uint16(100); seq < 110; seq++ {
		h := rtp.Header{Version: 2, SSRC: 1234, SequenceNumber: seq}
		_ = h.SetExtension(3, []byte{byte(seq >> 8), byte(seq)})
		raw, _ := (&rtp.Packet{Header: h, Payload: make([]byte, 100)}).Marshal()
		src.pkts = append(src.pkts, raw)
	}
	allocs := testing.AllocsPerRun(9, func() {
		if _, _, err := r.Read(buf, nil); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per packet read", allocs)
	}
	select {
	case pkts := <-sink.ch:
		fb, ok := pkts[0].(*rtcp.TransportLayerCC)
		if !ok || fb.MediaSSRC != 1234 || fb.BaseSequenceNumber != 100 || fb.PacketStatusCount != 10 {
			t.Fatalf("feedback %+v", pkts[0])
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no feedback within 5 s")
	}
}
