package recorder

import (
	"time"

	"github.com/pion/webrtc/v4"

	"videochat/sfu"
)

const (
	// keyRequestInterval is how often a video track that waits for a
	// keyframe asks for one again (the SFU throttles further).
	keyRequestInterval = int64(time.Second)
	defaultAudioFrame  = 20 // ms, for the duration of the last frame
	defaultVideoFrame  = 33
)

// queuedFrame is a complete frame waiting to be interleaved into the file.
type queuedFrame struct {
	wall int64 // server clock, Unix ns
	ext  int64 // extended RTP timestamp
	key  bool
	data []byte
}

// track is the sfu.TrackWriter of one audio or video track. All its
// state is guarded by its session's mutex: the session's other track,
// and Recorder.Close, run on other goroutines.
type track struct {
	s      *session
	info   sfu.TrackInfo
	video  bool
	number uint64 // track number in the file, once the header is written

	jb     *jitterBuffer
	vp8    *vp8Assembler // video only
	clock  *rtpClock
	emitFn emitFunc
	queue  []queuedFrame

	closed    bool
	finishing bool  // flushing at the end: no keyframe requests
	now       int64 // time of the packet being handled
	ignored   uint64

	wantKey     bool // ask for a keyframe once the lock is released
	lastKeyReq  int64
	seenKeyLost uint64

	lastMs  int64 // file time of the last written frame, -1 if none
	lastDur int64
	written uint64
	forgot  bool // the Recorder forgot the finished session (own goroutine only)
}

func newTrack(info sfu.TrackInfo, now int64) *track {
	t := &track{info: info, video: info.Kind == webrtc.RTPCodecTypeVideo,
		jb: newJitterBuffer(jitterMaxWait), lastMs: -1, lastKeyReq: now}
	rate := info.Codec.ClockRate
	t.lastDur = defaultAudioFrame
	if t.video {
		t.vp8 = newVP8Assembler()
		t.lastDur = defaultVideoFrame
		if rate == 0 {
			rate = 90000
		}
	} else if rate == 0 {
		rate = 48000
	}
	t.clock = newRTPClock(rate)
	t.emitFn = t.onPacket
	return t
}

// WriteRTP implements sfu.TrackWriter.
func (t *track) WriteRTP(pkt []byte) error {
	s := t.s
	s.mu.Lock()
	err := s.writeRTP(t, pkt)
	req := t.wantKey
	t.wantKey = false
	done := s.done
	s.mu.Unlock()
	if req && t.info.RequestKeyframe != nil {
		t.info.RequestKeyframe()
	}
	t.afterDone(done)
	return err
}

// SenderReport implements sfu.TrackWriter.
func (t *track) SenderReport(ntpTime uint64, rtpTime uint32) {
	s := t.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done || t.closed {
		return
	}
	t.clock.senderReport(&s.sender, ntpTime, rtpTime, s.r.nowNs())
	if t.lastMs < 0 {
		// Nothing of this track is in the file yet: its queued frames
		// take the report's timing outright, no slewing needed.
		t.clock.remap()
		for i := range t.queue {
			t.queue[i].wall = t.clock.at(t.queue[i].ext)
		}
	}
}

// Close implements sfu.TrackWriter: the track ended. When it was the
// session's last open track, the file is finalised.
func (t *track) Close() error {
	s := t.s
	s.mu.Lock()
	s.closeTrack(t)
	done := s.done
	s.mu.Unlock()
	t.afterDone(done)
	return nil
}

func (t *track) afterDone(done bool) {
	if done && !t.forgot {
		t.forgot = true
		t.s.r.forget(t.s)
	}
}

// accept filters packets that are not this track's media.
func (t *track) accept(ssrc uint32, pt uint8) bool {
	if t.info.SSRC != 0 && ssrc != t.info.SSRC {
		return false
	}
	return t.info.Codec.PayloadType == 0 || pt == uint8(t.info.Codec.PayloadType)
}

// onPacket gets the track's packets in sequence order from the jitter
// buffer and queues the frames they complete.
func (t *track) onPacket(p *packet, lost int) {
	if !t.video {
		if len(p.payload) > 0 { // one Opus packet is one frame
			data := append([]byte(nil), p.payload...)
			w, ext := t.clock.wall(p.ts, p.arrival)
			t.enqueue(w, ext, true, data)
		}
		return
	}
	f, ok := t.vp8.push(p, lost)
	if ok {
		w, ext := t.clock.wall(f.ts, f.arrival)
		t.enqueue(w, ext, f.key, f.data)
		if f.key {
			t.s.videoSize(t.vp8.width, t.vp8.height)
		}
	}
	t.maybeRequestKey()
}

// maybeRequestKey asks for a keyframe right after a loss broke the
// video, and every keyRequestInterval while it is still missing.
func (t *track) maybeRequestKey() {
	if !t.vp8.needKey || t.finishing {
		return
	}
	if t.vp8.keyLost != t.seenKeyLost || t.now-t.lastKeyReq >= keyRequestInterval {
		t.seenKeyLost = t.vp8.keyLost
		t.lastKeyReq = t.now
		t.wantKey = true
	}
}

func (t *track) enqueue(wall, ext int64, key bool, data []byte) {
	t.queue = append(t.queue, queuedFrame{wall: wall, ext: ext, key: key, data: data})
	if wall > t.s.newest {
		t.s.newest = wall
	}
}

// pop removes the track's oldest queued frame.
func (t *track) pop() queuedFrame {
	f := t.queue[0]
	t.queue[0] = queuedFrame{}
	t.queue = t.queue[1:]
	if len(t.queue) == 0 {
		t.queue = nil
	}
	return f
}

// fileTime converts a wall time to the file's milliseconds, keeping the
// track's times strictly increasing.
func (t *track) fileTime(wall, origin int64) int64 {
	ms := (wall - origin + int64(time.Millisecond)/2) / int64(time.Millisecond)
	if ms < 0 {
		ms = 0
	}
	if t.lastMs >= 0 && ms <= t.lastMs {
		ms = t.lastMs + 1
	}
	return ms
}

// wrote records that a frame went into the file at ms.
func (t *track) wrote(ms int64) {
	if t.lastMs >= 0 {
		if d := ms - t.lastMs; d > 0 && d < 1000 {
			t.lastDur = d
		}
	}
	t.lastMs = ms
	t.written++
}
