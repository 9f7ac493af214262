package sfu

import (
	"encoding/binary"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// maxPacket is the largest RTP packet read from a publisher.
const maxPacket = 1500

// upTrack is one incoming track of a publisher. Its read loop forwards every
// packet to the downTracks subscribed to it.
type upTrack struct {
	track     *webrtc.TrackRemote
	kind      webrtc.RTPCodecType
	kf        *keyframeThrottle
	writeRTCP func([]rtcp.Packet) error // to the publisher

	mu    sync.Mutex                   // serialises changes of sinks
	sinks atomic.Pointer[[]*downTrack] // copy-on-write; read per packet
	rec   atomic.Pointer[recordQueue]  // nil until the call is recorded (consent.go)
	recOn atomic.Bool                  // recording was started (at most once)
	ended atomic.Bool                  // close has run
	nack  *nackTracker                 // nil unless the track takes NACKs

	// fwd lets one goroutine at a time forward: pion's read loop (run) or
	// the media socket's reader on the receive fast path (rxfast.go),
	// which takes a stream over while packets may still wait in pion's
	// buffers. It guards the fields below. It is held across the writes
	// to the subscribers (an exception to "no lock across I/O", since it
	// serialises the forwarding itself): nothing else takes it, the writes
	// never wait on the socket reader, and pion's read loop contends only
	// for the packets it had buffered at the takeover (and drops the
	// copies the fast path hands it back: passedBack).
	fwd      sync.Mutex
	dup      dupFilter
	viaRTX   bool // the packet being forwarded came as a retransmission
	in       rtp.Header
	out      rtp.Header
	outExt   [4]rtp.Extension
	lastREMB time.Duration // since epoch
	rembSent bool
	resume   mediaResume   // video only
	epoch    time.Time     // arrival times are taken from it (rxStats)
	arrival  time.Duration // of the packet being forwarded, since epoch

	buf [maxPacket]byte // owned by run
	// fromPion is passMark|seq when pion was handed a copy of packet seq
	// that the fast path forwarded (rxfast.go): run drops it.
	fromPion atomic.Uint32

	stats upStats
	rx    rxStats // for RTCP receiver reports (rxreport.go)
}

type upStats struct {
	packets, bytes, duplicates, keyframeRequests, recovered atomic.Uint64
	remb                                                    atomic.Uint64 // last REMB sent, bit/s
}

func newUpTrack(p *Participant, track *webrtc.TrackRemote) *upTrack {
	u := &upTrack{track: track, kind: track.Kind(), writeRTCP: p.pc.WriteRTCP, epoch: time.Now()}
	u.rx.clockRate = uint64(track.Codec().ClockRate)
	if takesNACK(track.Codec()) {
		u.nack = newNackTracker(nackInterval, nackMaxPerPacket)
	}
	if u.kind == webrtc.RTPCodecTypeVideo {
		u.resume = newMediaResume(track.Codec().ClockRate, rtcpSilence)
	}
	ssrc := uint32(track.SSRC())
	u.kf = newKeyframeThrottle(p.sfu.cfg.KeyframeInterval, func() {
		u.stats.keyframeRequests.Add(1)
		_ = u.writeRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
	})
	return u
}

func (u *upTrack) requestKeyframe() {
	if u.kind == webrtc.RTPCodecTypeVideo {
		u.kf.request()
	}
}

// addSink subscribes d; the next packet reaches it. A sink it has already
// is refused (false): one subscription, one copy of every packet.
func (u *upTrack) addSink(d *downTrack) bool {
	u.mu.Lock()
	old := u.loadSinks()
	for _, s := range old {
		if s == d {
			u.mu.Unlock()
			return false
		}
	}
	next := make([]*downTrack, 0, len(old)+1)
	next = append(append(next, old...), d)
	u.sinks.Store(&next)
	u.mu.Unlock()
	d.setSource(u)
	return true
}

// removeSink unsubscribes d; false if d was not subscribed.
func (u *upTrack) removeSink(d *downTrack) bool {
	u.mu.Lock()
	old := u.loadSinks()
	next := make([]*downTrack, 0, len(old))
	for _, s := range old {
		if s != d {
			next = append(next, s)
		}
	}
	if len(next) == len(old) {
		u.mu.Unlock()
		return false
	}
	u.sinks.Store(&next)
	u.mu.Unlock()
	d.clearSource(u)
	return true
}

func (u *upTrack) loadSinks() []*downTrack {
	if s := u.sinks.Load(); s != nil {
		return *s
	}
	return nil
}

// run forwards packets until the track ends (its PeerConnection closed).
func (u *upTrack) run() {
	for {
		n, attrs, err := u.track.Read(u.buf[:])
		if err != nil {
			return
		}
		if u.passedBack(u.buf[:n]) {
			continue
		}
		u.deliver(u.buf[:n], attrs != nil && attrs.Get(webrtc.AttributeRtxSsrc) != nil)
	}
}

// passedBack tells the copy of a packet the fast path forwarded (and
// handed to pion only to keep it in step) from the rest.
func (u *upTrack) passedBack(pkt []byte) bool {
	m := u.fromPion.Load()
	return m != 0 && len(pkt) >= 4 && m == passMark|uint32(binary.BigEndian.Uint16(pkt[2:4])) && u.fromPion.CompareAndSwap(m, 0)
}

// deliver forwards one packet; viaRTX says it came as a retransmission
// (restored from RTX). Safe for concurrent use: pion's read loop and the
// receive fast path both deliver. It returns the packet's arrival time
// since u.epoch (0 for a packet that does not parse).
func (u *upTrack) deliver(pkt []byte, viaRTX bool) time.Duration {
	u.fwd.Lock()
	u.viaRTX = viaRTX
	if viaRTX {
		u.stats.recovered.Add(1)
	}
	u.arrival = 0
	u.forward(pkt)
	at := u.arrival
	u.fwd.Unlock()
	return at
}

// forward parses one packet in place and writes it to every sink; u.fwd
// is held (or the caller is the only one forwarding, as in benchmarks).
func (u *upTrack) forward(pkt []byte) {
	hdrLen, err := u.in.Unmarshal(pkt)
	if err != nil {
		return
	}
	end := len(pkt)
	u.in.PaddingSize = 0
	if u.in.Padding {
		pad := int(pkt[end-1])
		if pad == 0 || hdrLen+pad > end {
			return
		}
		end -= pad
		u.in.PaddingSize = byte(pad)
	}
	// The packet's arrival, read once: time.Since reads only the
	// monotonic clock (~45 ns here; time.Now ~70 ns).
	now := time.Since(u.epoch)
	u.arrival = now
	if !u.viaRTX {
		u.rx.onArrival(u.in.Timestamp, now)
	}
	jumped := u.nack != nil && u.nack.onPacket(u.in.SequenceNumber, u.viaRTX)
	if u.resume.resumed(u.in.Timestamp) || jumped {
		// The media comes back after a hole too long to repair (an
		// outage on this uplink): subscribers cannot decode what
		// follows without a keyframe, so ask now rather than when
		// their decoders give up.
		u.requestKeyframe()
	}
	if !u.dup.accept(u.in.SequenceNumber) {
		u.stats.duplicates.Add(1)
		if !u.viaRTX {
			u.rx.onReceived() // arrived all the same (RFC 3550 counts duplicates)
		}
		return
	}
	u.rx.onAccepted(&u.dup)
	if !u.viaRTX {
		u.rx.onReceived()
	}
	u.stats.packets.Add(1)
	u.stats.bytes.Add(uint64(len(pkt)))
	if q := u.rec.Load(); q != nil {
		q.push(pkt)
	}
	payload := pkt[hdrLen:end]
	for _, d := range u.loadSinks() {
		_ = d.write(&u.in, &u.out, u.outExt[:], payload)
	}
	if u.kind == webrtc.RTPCodecTypeVideo {
		u.maybeSendREMB(now)
	}
}

// readRTCP drains the publisher's RTCP for this track: its sender reports
// feed the receiver reports (so the publisher can measure the round trip)
// and, while recording, the recorder.
func (u *upTrack) readRTCP(r *webrtc.RTPReceiver) {
	ssrc := uint32(u.track.SSRC())
	buf := make([]byte, maxPacket)
	for {
		n, _, err := r.Read(buf)
		if err != nil {
			return
		}
		u.onRTCP(buf[:n], ssrc, time.Now())
	}
}

// onRTCP takes RTCP from the publisher that names this track (whose
// media SSRC is ssrc), from readRTCP or the RTCP fast path (rtcpfast.go),
// on any goroutine.
func (u *upTrack) onRTCP(b []byte, ssrc uint32, now time.Time) {
	senderReports(b, func(from uint32, ntp uint64, rtpTime uint32) {
		if from != ssrc {
			return
		}
		u.rx.onSenderReport(ntp, now)
		if q := u.rec.Load(); q != nil {
			q.pushReport(ntp, rtpTime)
		}
	})
}

func (u *upTrack) close() {
	u.ended.Store(true)
	u.kf.close()
	if q := u.rec.Load(); q != nil {
		q.stop()
	}
	u.mu.Lock()
	old := u.loadSinks()
	u.sinks.Store(nil)
	u.mu.Unlock()
	for _, d := range old {
		d.clearSource(u)
	}
}

// takesNACK reports whether the publisher accepts generic NACKs for c.
func takesNACK(c webrtc.RTPCodecParameters) bool {
	for _, f := range c.RTCPFeedback {
		if f.Type == "nack" && f.Parameter == "" {
			return true
		}
	}
	return false
}
