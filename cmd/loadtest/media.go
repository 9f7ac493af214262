package main

import (
	"encoding/binary"
	"hash/crc32"
	"sync/atomic"
	"time"

	"github.com/pion/rtp"
)

// A media payload carries, after an optional VP8 payload descriptor, a
// header the receiver checks:
//
//	magic  uint16 "LT"
//	kind   uint8  (0 audio, 1 video)
//	flags  uint8  (1: keyframe)
//	stream uint32 (participant id)
//	seq    uint32 (per stream, never reused: a gap is loss)
//	sent   int64  (UnixNano at send time, minus any injected delay)
//
// then filler, and a CRC-32C of everything before it in the last 4 bytes.
const (
	magic      = 0x4c54
	hdrLen     = 20
	crcLen     = 4
	minPayload = hdrLen + crcLen
	kindAudio  = 0
	kindVideo  = 1
	flagKey    = 1
	vp8Prefix  = 2 // payload descriptor (S bit on a frame's first packet) + one byte of the VP8 header
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fillPayload writes a packet of size bytes into b (which must hold it)
// and returns it.
func fillPayload(b []byte, size int, kind, flags uint8, stream, seq uint32, sent int64, first bool) []byte {
	b = b[:size]
	off := 0
	if kind == kindVideo {
		b[0] = 0
		if first {
			b[0] = 0x10
		}
		b[1] = 1 // VP8 "P" bit: an interframe
		if flags&flagKey != 0 {
			b[1] = 0
		}
		off = vp8Prefix
	}
	h := b[off:]
	binary.BigEndian.PutUint16(h[0:], magic)
	h[2], h[3] = kind, flags
	binary.BigEndian.PutUint32(h[4:], stream)
	binary.BigEndian.PutUint32(h[8:], seq)
	binary.BigEndian.PutUint64(h[12:], uint64(sent))
	fill := b[off+hdrLen : size-crcLen]
	x := byte(seq)
	for i := range fill {
		fill[i] = x + byte(i)
	}
	binary.BigEndian.PutUint32(b[size-crcLen:], crc32.Checksum(b[:size-crcLen], castagnoli))
	return b
}

// parsedPayload is what a receiver reads from a payload.
type parsedPayload struct {
	kind, flags uint8
	stream, seq uint32
	sent        int64
}

// parsePayload reads a payload; ok is false for one that is not ours or
// is damaged.
func parsePayload(b []byte, video bool) (p parsedPayload, ok bool) {
	off := 0
	if video {
		off = vp8Prefix
	}
	if len(b) < off+minPayload {
		return p, false
	}
	n := len(b)
	if binary.BigEndian.Uint32(b[n-crcLen:]) != crc32.Checksum(b[:n-crcLen], castagnoli) {
		return p, false
	}
	h := b[off:]
	if binary.BigEndian.Uint16(h) != magic {
		return p, false
	}
	p.kind, p.flags = h[2], h[3]
	p.stream = binary.BigEndian.Uint32(h[4:])
	p.seq = binary.BigEndian.Uint32(h[8:])
	p.sent = int64(binary.BigEndian.Uint64(h[12:]))
	return p, true
}

// mediaProfile is what each participant sends.
type mediaProfile struct {
	AudioBytes   int           // Opus-sized payload, 50 packets/s
	VideoBitrate int           // bits/s, on average over keyframes and interframes
	FPS          int           //
	MTU          int           // largest video payload
	KeyInterval  time.Duration // periodic keyframes (and on PLI)
	KeyFactor    int           // a keyframe is this many times an interframe
	PaceFactor   float64       // video is paced at this multiple of its bitrate
	Drop         float64       // fraction of packets not sent (injected loss, counted by receivers)
	Delay        time.Duration // injected latency: sent stamps are this much earlier
}

func defaultProfile() mediaProfile {
	return mediaProfile{AudioBytes: 160, VideoBitrate: 1_200_000, FPS: 30, MTU: 1200,
		KeyInterval: 3 * time.Second, KeyFactor: 5, PaceFactor: 2.5}
}

// frameSizes returns the interframe and keyframe size in bytes so that the
// average over a key interval matches the bitrate.
func (m mediaProfile) frameSizes() (inter, key int) {
	frames := int(m.KeyInterval.Seconds()*float64(m.FPS) + 0.5)
	if frames < 1 {
		frames = 1
	}
	total := m.VideoBitrate / 8 * int(m.KeyInterval.Seconds()*1000) / 1000
	inter = total / (frames - 1 + m.KeyFactor)
	if inter < minPayload+vp8Prefix {
		inter = minPayload + vp8Prefix
	}
	return inter, inter * m.KeyFactor
}

// rtpWriter sends one RTP packet of a kind; the packet is reused after it
// returns.
type rtpWriter func(kind uint8, pkt *rtp.Packet) error

// sender generates one participant's media until stop is closed: audio
// every 20 ms, video frames at FPS split into MTU-sized packets and paced.
type sender struct {
	prof     mediaProfile
	stream   uint32
	write    rtpWriter
	keyAsked atomic.Bool // a PLI/FIR arrived: the next frame is a keyframe
	sent     atomic.Int64
	dropped  atomic.Int64
	rnd      uint64
}

const tick = 5 * time.Millisecond

func (s *sender) run(stop <-chan struct{}) {
	inter, key := s.prof.frameSizes()
	t := time.NewTicker(tick)
	defer t.Stop()
	buf := make([]byte, 1500)
	var audio, video rtp.Packet
	audio.Version, video.Version = 2, 2
	var aSeq, vSeq uint32
	var queue []int // sizes of video packets waiting for the pacer
	var queueFirst []bool
	var queueKey []bool
	start := time.Now()
	nextAudio, nextFrame, nextKey := start, start, start
	frameGap := time.Second / time.Duration(s.prof.FPS)
	budget := 0.0
	perTick := float64(s.prof.VideoBitrate) / 8 * s.prof.PaceFactor * tick.Seconds()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			for !now.Before(nextAudio) {
				audio.Timestamp += 960
				audio.SequenceNumber++
				audio.Marker = false
				if s.emit(kindAudio, &audio, buf, s.prof.AudioBytes, 0, aSeq, true) {
					audio.SequenceNumber--
				}
				aSeq++
				nextAudio = nextAudio.Add(20 * time.Millisecond)
			}
			for !now.Before(nextFrame) {
				size, flags := inter, uint8(0)
				if !now.Before(nextKey) || s.keyAsked.Swap(false) {
					size, flags = key, flagKey
					nextKey = now.Add(s.prof.KeyInterval)
				}
				for first := true; size > 0; first = false {
					n := min(size, s.prof.MTU)
					if size-n > 0 && size-n < minPayload+vp8Prefix {
						n = size - (minPayload + vp8Prefix)
					}
					queue = append(queue, n)
					queueFirst = append(queueFirst, first)
					queueKey = append(queueKey, flags != 0)
					size -= n
				}
				nextFrame = nextFrame.Add(frameGap)
			}
			budget = min(budget+perTick, perTick*4)
			for len(queue) > 0 && budget > 0 {
				n := queue[0]
				var flags uint8
				if queueKey[0] {
					flags = flagKey
				}
				video.SequenceNumber++
				video.Marker = len(queue) == 1 || queueFirst[1]
				if queueFirst[0] {
					video.Timestamp += 3000
				}
				if s.emit(kindVideo, &video, buf, n, flags, vSeq, queueFirst[0]) {
					video.SequenceNumber--
				}
				vSeq++
				budget -= float64(n)
				queue, queueFirst, queueKey = queue[1:], queueFirst[1:], queueKey[1:]
			}
			if len(queue) == 0 {
				queue, queueFirst, queueKey = queue[:0], queueFirst[:0], queueKey[:0]
			}
		}
	}
}

// emit builds and writes one packet; it reports whether the packet was
// dropped on purpose (then its RTP sequence number is not used, so the
// loss cannot be repaired).
func (s *sender) emit(kind uint8, pkt *rtp.Packet, buf []byte, size int, flags uint8, seq uint32, first bool) bool {
	if s.prof.Drop > 0 && s.random() < s.prof.Drop {
		s.dropped.Add(1)
		return true
	}
	sent := time.Now().Add(-s.prof.Delay).UnixNano()
	pkt.Payload = fillPayload(buf, size, kind, flags, s.stream, seq, sent, first)
	if s.write(kind, pkt) == nil {
		s.sent.Add(1)
	}
	return false
}

// random returns a pseudo-random number in [0, 1) (xorshift; no locks).
func (s *sender) random() float64 {
	if s.rnd == 0 {
		s.rnd = uint64(s.stream)*0x9e3779b97f4a7c15 + 1
	}
	s.rnd ^= s.rnd << 13
	s.rnd ^= s.rnd >> 7
	s.rnd ^= s.rnd << 17
	return float64(s.rnd>>11) / (1 << 53)
}
