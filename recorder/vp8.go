package recorder

import (
	"github.com/pion/rtp/codecs"
)

// vp8Frame is one complete, decodable VP8 frame.
type vp8Frame struct {
	ts      uint32
	arrival int64
	key     bool
	data    []byte
}

// vp8Assembler turns in-order VP8 RTP packets (RFC 7741) into frames.
// A frame is written only if all its packets arrived; after any loss
// that may have taken a frame with it, frames are dropped until the
// next keyframe, so the file never holds a frame the decoder cannot
// decode correctly.
type vp8Assembler struct {
	desc    codecs.VP8Packet
	frame   []byte
	ts      uint32
	arrival int64
	inFrame bool // a frame was started and its last packet not seen
	broken  bool // the frame in progress lost a packet
	gap     bool // packets were lost since the last complete frame
	needKey bool // drop frames until a keyframe
	pic     int  // picture ID of the frame in progress, -1 if none
	picMod  int  // its range: 128 or 32768
	lastPic int  // picture ID of the last complete frame, -1 if none
	lastMod int
	dropped uint64 // frames not written
	keyLost uint64 // times a loss made it wait for a keyframe
	width   int    // of the last keyframe
	height  int
}

func newVP8Assembler() *vp8Assembler {
	return &vp8Assembler{needKey: true, pic: -1, lastPic: -1}
}

// push takes the next packet in sequence order. It returns a complete
// frame, if this packet finished one that can be written.
func (a *vp8Assembler) push(p *packet, lost int) (vp8Frame, bool) {
	if lost > 0 {
		a.gap = true
		if a.inFrame {
			a.broken = true
		}
	}
	if len(p.payload) == 0 {
		return vp8Frame{}, false // padding only
	}
	payload, err := a.desc.Unmarshal(p.payload)
	if err != nil || len(payload) == 0 {
		a.abandon()
		return vp8Frame{}, false
	}
	if a.inFrame && p.ts != a.ts {
		a.abandon() // the previous frame never saw its marker packet
	}
	if !a.inFrame {
		a.startFrame(p)
	}
	if !a.broken {
		a.frame = append(a.frame, payload...)
	}
	if !p.marker {
		return vp8Frame{}, false
	}
	return a.endFrame()
}

// startFrame begins a frame with p, deciding whether a loss before it
// could have taken a whole frame with it.
func (a *vp8Assembler) startFrame(p *packet) {
	a.inFrame = true
	a.ts = p.ts
	a.arrival = p.arrival
	a.frame = nil
	a.broken = a.desc.S != 1 || a.desc.PID != 0
	a.pic, a.picMod = pictureID(p.payload)
	if a.gap && !a.broken && !a.followsLast() {
		a.requireKey()
	}
	a.gap = false
}

// followsLast reports whether the frame being started directly follows
// the last complete one by picture ID: then the loss was only padding.
func (a *vp8Assembler) followsLast() bool {
	if a.pic < 0 || a.lastPic < 0 {
		return false
	}
	m := min(a.picMod, a.lastMod) // the 7-bit form may switch to 15 bits
	return a.pic%m == (a.lastPic+1)%m
}

func (a *vp8Assembler) endFrame() (vp8Frame, bool) {
	a.inFrame = false
	if a.broken {
		a.dropped++
		a.requireKey()
		return vp8Frame{}, false
	}
	a.lastPic, a.lastMod = a.pic, a.picMod
	w, h, key := vp8KeyframeSize(a.frame)
	if !key && a.needKey {
		a.dropped++
		return vp8Frame{}, false
	}
	if key {
		a.needKey = false
		a.width, a.height = w, h
	}
	f := vp8Frame{ts: a.ts, arrival: a.arrival, key: key, data: a.frame}
	a.frame = nil
	return f, true
}

// abandon drops the frame in progress; what follows needs a keyframe.
func (a *vp8Assembler) abandon() {
	if a.inFrame {
		a.dropped++
	}
	a.inFrame = false
	a.broken = false
	a.frame = nil
	a.requireKey()
}

func (a *vp8Assembler) requireKey() {
	if !a.needKey {
		a.needKey = true
		a.keyLost++
	}
}

// pictureID reads the PictureID of a VP8 payload descriptor and its
// range (128 or 32768); -1 if absent.
func pictureID(d []byte) (pic, mod int) {
	if len(d) < 3 || d[0]&0x80 == 0 || d[1]&0x80 == 0 {
		return -1, 0
	}
	if d[2]&0x80 == 0 {
		return int(d[2]), 128
	}
	if len(d) < 4 {
		return -1, 0
	}
	return int(d[2]&0x7f)<<8 | int(d[3]), 32768
}

// vp8KeyframeSize parses a VP8 frame header (RFC 6386, 9.1): keyframes
// carry a start code and the frame size.
func vp8KeyframeSize(frame []byte) (w, h int, key bool) {
	if len(frame) < 10 || frame[0]&0x01 != 0 {
		return 0, 0, false
	}
	if frame[3] != 0x9d || frame[4] != 0x01 || frame[5] != 0x2a {
		return 0, 0, false
	}
	w = int(frame[6]) | int(frame[7]&0x3f)<<8
	h = int(frame[8]) | int(frame[9]&0x3f)<<8
	return w, h, true
}
