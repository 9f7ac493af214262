package sfu

import (
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// countingWriter is a TrackLocalWriter that only counts.
type countingWriter struct{ packets, bytes int }

func (w *countingWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.packets++
	w.bytes += h.MarshalSize() + len(payload)
	return len(payload), nil
}

func (w *countingWriter) Write(b []byte) (int, error) { return len(b), nil }

func benchPacket(seq uint16) []byte {
	p := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: uint32(seq) * 3000, SSRC: 1234},
		Payload: make([]byte, 1100)}
	_ = p.Header.SetExtension(3, []byte{1, 2}) // a transport-cc sequence number, as browsers send
	b, _ := p.Marshal()
	return b
}

// BenchmarkForward measures the SFU's own per-packet work: parse, duplicate
// check, receiver-report counting (arrival time, jitter), rewrite and
// hand-off to one subscriber's write stream; for a video track also the
// loss tracking for NACKs.
func BenchmarkForward(b *testing.B) {
	b.Run("audio", func(b *testing.B) { benchForward(b, nil) })
	b.Run("video", func(b *testing.B) { benchForward(b, newNackTracker(nackInterval, nackMaxPerPacket)) })
	// As a video track: also the REMB timer and the resume check.
	b.Run("video-kind", func(b *testing.B) {
		benchForwardKind(b, webrtc.RTPCodecTypeVideo, newNackTracker(nackInterval, nackMaxPerPacket))
	})
}

func benchForward(b *testing.B, nack *nackTracker) {
	benchForwardKind(b, webrtc.RTPCodecTypeAudio, nack)
}

func benchForwardKind(b *testing.B, kind webrtc.RTPCodecType, nack *nackTracker) {
	u := &upTrack{kind: kind, kf: newKeyframeThrottle(time.Hour, func() {}), nack: nack, epoch: time.Now()}
	u.rx.clockRate = 48000
	if kind == webrtc.RTPCodecTypeVideo {
		u.rx.clockRate = 90000
		u.resume = newMediaResume(90000, rtcpSilence)
	}
	d := newDownTrack(webrtc.RTPCodecTypeAudio, "s", nil)
	w := &countingWriter{}
	d.ssrc, d.pt, d.writer = 42, 96, w
	u.addSink(d)
	pkts := make([][]byte, 1024)
	for i := range pkts {
		pkts[i] = benchPacket(uint16(i))
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(pkts[0])))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		pkt := pkts[i%len(pkts)]
		// Advance the sequence number so the duplicate filter passes it.
		seq := uint16(i)
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		u.forward(pkt)
	}
	if w.packets != b.N {
		b.Fatalf("forwarded %d of %d", w.packets, b.N)
	}
}
