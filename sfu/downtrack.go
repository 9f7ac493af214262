package sfu

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// downTrack is one outgoing track of a subscriber's PeerConnection. It is
// created before negotiation (so a 1:1 call needs no renegotiation) and is
// fed by whichever upTrack of the other participant has the same kind.
type downTrack struct {
	id, streamID string
	kind         webrtc.RTPCodecType
	mime         string

	mu     sync.Mutex
	rw     rewriter
	ssrc   uint32
	pt     uint8
	writer webrtc.TrackLocalWriter // nil while unbound

	source atomic.Pointer[upTrack] // feeds this track; target of keyframe requests
	bwe    cc.BandwidthEstimator   // the subscriber's downlink estimate; may be nil

	epoch    time.Time
	lastRTCP atomic.Int64 // since epoch (0: none yet): the receiver's last RTCP about it

	stats downStats
}

type downStats struct {
	packets, bytes, plis, firs, nacks, writeErrors atomic.Uint64
	padding, paddingBytes                          atomic.Uint64 // bandwidth probes
	resumes                                        atomic.Uint64 // RTCP back after rtcpSilence
}

func newDownTrack(kind webrtc.RTPCodecType, streamID string, bwe cc.BandwidthEstimator) *downTrack {
	d := &downTrack{id: kind.String(), streamID: streamID, kind: kind, bwe: bwe, epoch: time.Now()}
	switch kind {
	case webrtc.RTPCodecTypeAudio:
		d.mime, d.rw = webrtc.MimeTypeOpus, newRewriter(960) // 20 ms at 48 kHz
	default:
		d.mime, d.rw = webrtc.MimeTypeVP8, newRewriter(3000) // one frame at 30 fps
	}
	return d
}

// Bind implements webrtc.TrackLocal.
func (d *downTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	for _, c := range ctx.CodecParameters() {
		if !strings.EqualFold(c.MimeType, d.mime) {
			continue
		}
		d.mu.Lock()
		d.ssrc, d.pt, d.writer = uint32(ctx.SSRC()), uint8(c.PayloadType), ctx.WriteStream()
		d.mu.Unlock()
		if p, ok := d.bwe.(*probingEstimator); ok && d.kind == webrtc.RTPCodecTypeVideo {
			p.setPadder(d)
		}
		d.requestKeyframe()
		return c, nil
	}
	return webrtc.RTPCodecParameters{}, webrtc.ErrUnsupportedCodec
}

// Unbind implements webrtc.TrackLocal.
func (d *downTrack) Unbind(webrtc.TrackLocalContext) error {
	d.mu.Lock()
	d.writer = nil
	d.mu.Unlock()
	if p, ok := d.bwe.(*probingEstimator); ok {
		p.clearPadder(d)
	}
	return nil
}

// ID, RID, StreamID and Kind implement webrtc.TrackLocal.
func (d *downTrack) ID() string                { return d.id }
func (d *downTrack) RID() string               { return "" }
func (d *downTrack) StreamID() string          { return d.streamID }
func (d *downTrack) Kind() webrtc.RTPCodecType { return d.kind }

// setSource makes up feed this track from its next packet on. The caller
// asks for a keyframe once it holds no lock.
func (d *downTrack) setSource(up *upTrack) {
	d.source.Store(up)
	d.mu.Lock()
	d.rw.sourceChanged()
	d.mu.Unlock()
}

// clearSource detaches up if it is still the source.
func (d *downTrack) clearSource(up *upTrack) { d.source.CompareAndSwap(up, nil) }

func (d *downTrack) requestKeyframe() {
	if up := d.source.Load(); up != nil && d.kind == webrtc.RTPCodecTypeVideo {
		up.requestKeyframe()
	}
}

// write forwards one packet. in is the source header; out is scratch space
// owned by the calling read loop. No lock is held during the network write.
func (d *downTrack) write(in, out *rtp.Header, ext []rtp.Extension, payload []byte) error {
	d.mu.Lock()
	w := d.writer
	if w == nil {
		d.mu.Unlock()
		return nil
	}
	seq, ts, ok := d.rw.mapPacket(in.SSRC, in.SequenceNumber, in.Timestamp, in.Marker)
	if !ok {
		d.mu.Unlock()
		return nil // too late to be numbered: the receiver gave up on it long ago
	}
	*out = rtp.Header{
		Version: 2, Padding: in.Padding, PaddingSize: in.PaddingSize, Marker: in.Marker,
		PayloadType: d.pt, SequenceNumber: seq, Timestamp: ts, SSRC: d.ssrc,
		CSRC: in.CSRC, Extensions: ext[:0],
	}
	d.mu.Unlock()
	if _, err := w.WriteRTP(out, payload); err != nil {
		d.stats.writeErrors.Add(1)
		return err
	}
	d.stats.packets.Add(1)
	d.stats.bytes.Add(uint64(len(payload)))
	return nil
}

// Padding packets carry no payload and the most padding RTP allows.
const (
	paddingSize   = 255
	maxPadBurst   = 16                   // packets per call of pad
	paddingPacket = 12 + 8 + paddingSize // header, transport-cc extension, padding
)

// pad sends padding-only packets worth about bytes (a bandwidth probe),
// only between two frames so that no frame is split; it returns the bytes
// sent. It is called by the prober's pacer, never by a read loop.
func (d *downTrack) pad(bytes int) int {
	n := min((bytes+paddingPacket-1)/paddingPacket, maxPadBurst)
	if n <= 0 {
		return 0
	}
	var seqs [maxPadBurst]uint16
	d.mu.Lock()
	w, ssrc, pt := d.writer, d.ssrc, d.pt
	if w == nil || d.source.Load() == nil || !d.rw.betweenFrames() {
		d.mu.Unlock()
		return 0
	}
	var ts uint32
	for i := range n {
		seqs[i], ts = d.rw.padding()
	}
	d.mu.Unlock()
	sent := 0
	for i := range n {
		h := rtp.Header{Version: 2, Padding: true, PaddingSize: paddingSize,
			PayloadType: pt, SequenceNumber: seqs[i], Timestamp: ts, SSRC: ssrc}
		if _, err := w.WriteRTP(&h, nil); err != nil {
			d.stats.writeErrors.Add(1)
			break
		}
		sent += paddingPacket
		d.stats.padding.Add(1)
		d.stats.paddingBytes.Add(paddingPacket)
	}
	return sent
}

// rtcpSilence is how long a subscriber may send no RTCP for a track before
// its return counts as coming back from an outage. Browsers report on a
// video track at least every 1.5 s (libwebrtc: 1 s randomised ×0.5–1.5,
// more often with transport feedback), pion every 1 s; so 2.5 s of silence
// means the path was cut, and the frames sent meanwhile were lost.
const rtcpSilence = 2500 * time.Millisecond

// readRTCP drains the sender's RTCP (so the NACK responder works) and turns
// PLI/FIR from the receiver into a keyframe request for the source. It
// returns when the PeerConnection closes.
//
// When the receiver's RTCP comes back after rtcpSilence, the subscriber was
// cut off (an outage ICE may not even have noticed) and cannot decode what
// follows without a keyframe: it is asked for at once, rather than when the
// receiver's decoder gives up (Chromium waits 3 s for a decodable frame).
func (d *downTrack) readRTCP(sender *webrtc.RTPSender) {
	buf := make([]byte, 1500)
	for {
		n, attrs, err := sender.Read(buf)
		if err != nil {
			return
		}
		// Parsed once: the interceptors below (congestion control, the
		// NACK responder) cache what they parsed in the attributes.
		pkts, err := attrs.GetRTCPPackets(buf[:n])
		if err != nil {
			continue
		}
		d.onRTCP(pkts, time.Now())
	}
}

// onRTCP takes RTCP from the receiver that names this track, from
// readRTCP or the RTCP fast path (rtcpfast.go), on any goroutine.
func (d *downTrack) onRTCP(pkts []rtcp.Packet, now time.Time) {
	at := max(int64(now.Sub(d.epoch)), 1)
	last := d.lastRTCP.Swap(at)
	// Video only: browsers report on audio every ~5 s.
	if d.kind == webrtc.RTPCodecTypeVideo && last != 0 && at-last >= int64(rtcpSilence) {
		d.stats.resumes.Add(1)
		d.requestKeyframe()
	}
	d.handleRTCP(pkts)
}

func (d *downTrack) handleRTCP(pkts []rtcp.Packet) {
	for _, p := range pkts {
		switch p := p.(type) {
		case *rtcp.PictureLossIndication:
			d.stats.plis.Add(1)
			d.requestKeyframe()
		case *rtcp.FullIntraRequest:
			d.stats.firs.Add(1)
			d.requestKeyframe()
		case *rtcp.TransportLayerNack:
			d.stats.nacks.Add(nackedSeqs(p))
		}
	}
}

// boundSSRC is the outgoing SSRC, 0 while unbound.
func (d *downTrack) boundSSRC() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ssrc
}
