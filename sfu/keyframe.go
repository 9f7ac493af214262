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
