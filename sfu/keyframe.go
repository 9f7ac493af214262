package sfu

import (
	"sync"
	"time"
)

// keyframeThrottle coalesces keyframe requests for one publisher track: at
// most one request goes upstream per interval, and a request that arrives
// inside the interval is not lost but sent when the interval ends.
type keyframeThrottle struct {
	interval time.Duration
	send     func()

	mu      sync.Mutex
	last    time.Time
	pending *time.Timer
	closed  bool
}

func newKeyframeThrottle(interval time.Duration, send func()) *keyframeThrottle {
	return &keyframeThrottle{interval: interval, send: send}
}

// request asks for a keyframe; it never blocks on I/O.
func (k *keyframeThrottle) request() {
	k.mu.Lock()
	if k.closed || k.pending != nil {
		k.mu.Unlock()
		return
	}
	wait := k.interval - time.Since(k.last)
	if wait > 0 {
		k.pending = time.AfterFunc(wait, k.fire)
		k.mu.Unlock()
		return
	}
	k.last = time.Now()
	k.mu.Unlock()
	k.send()
}

func (k *keyframeThrottle) fire() {
	k.mu.Lock()
	k.pending = nil
	if k.closed {
		k.mu.Unlock()
		return
	}
	k.last = time.Now()
	k.mu.Unlock()
	k.send()
}

func (k *keyframeThrottle) close() {
	k.mu.Lock()
	k.closed = true
	if k.pending != nil {
		k.pending.Stop()
		k.pending = nil
	}
	k.mu.Unlock()
}

// mediaResume notices a publisher's media coming back after a hole of at
// least gap in media time (an outage on its uplink, or a paused track),
// read from RTP timestamps so the per-packet path reads no clock. What
// follows such a hole cannot be decoded without a keyframe.
type mediaResume struct {
	gap     uint32 // in RTP timestamp units; 0 disables
	last    uint32
	started bool
}

func newMediaResume(clockRate uint32, gap time.Duration) mediaResume {
	return mediaResume{gap: uint32(uint64(clockRate) * uint64(gap) / uint64(time.Second))}
}

// resumed records ts and reports whether it comes gap or more after the
// latest timestamp seen. Older timestamps (reordering, retransmissions) are
// ignored; a jump of half the timestamp space or more counts as backwards.
func (m *mediaResume) resumed(ts uint32) bool {
	if m.gap == 0 {
		return false
	}
	if !m.started {
		m.started, m.last = true, ts
		return false
	}
	d := int32(ts - m.last)
	if d <= 0 {
		return false
	}
	m.last = ts
	return uint32(d) >= m.gap
}
