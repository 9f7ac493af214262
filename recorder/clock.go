package recorder

import "time"

const (
	// ntpUnixOffset is the NTP time (seconds since 1900) of the Unix epoch.
	ntpUnixOffset = 2208988800
	// maxClockError is how far a mapped time may stray from the arrival
	// time before the mapping is considered broken and restarted.
	maxClockError = int64(10 * time.Second)
)

// ntpToUnixNano converts a 64-bit NTP timestamp to Unix nanoseconds.
func ntpToUnixNano(ntp uint64) int64 {
	sec := int64(ntp>>32) - ntpUnixOffset
	frac := int64(((ntp & 0xffffffff) * uint64(time.Second)) >> 32)
	return sec*int64(time.Second) + frac
}

// senderClock is the publisher's NTP clock relative to the server's,
// shared by the tracks of one participant so that they map onto the same
// wall clock. It is fixed at the first sender report of any track.
type senderClock struct {
	known  bool
	offset int64 // server time minus sender NTP time, ns
}

// rtpClock maps one track's RTP timestamps to server wall time (Unix ns).
// Before the first sender report it anchors at the first frame's arrival;
// after it, at the latest report (NTP time moved by the sender offset),
// which puts the audio and video of one sender on one clock.
type rtpClock struct {
	rate       int64 // ticks per second
	started    bool
	lastExt    int64 // highest extended timestamp seen
	anchored   bool
	anchorExt  int64
	anchorWall int64
	fromSR     bool
}

func newRTPClock(rate uint32) *rtpClock {
	if rate == 0 {
		rate = 90000
	}
	return &rtpClock{rate: int64(rate)}
}

// extend unwraps a 32-bit RTP timestamp near the last one seen.
func (c *rtpClock) extend(ts uint32) int64 {
	if !c.started {
		c.started = true
		c.lastExt = int64(ts)
		return c.lastExt
	}
	ext := c.lastExt + int64(int32(ts-uint32(c.lastExt)))
	if ext > c.lastExt {
		c.lastExt = ext
	}
	return ext
}

// senderReport anchors the clock at a report received at now.
func (c *rtpClock) senderReport(sc *senderClock, ntp uint64, rtpTime uint32, now int64) {
	ntpNs := ntpToUnixNano(ntp)
	if !sc.known {
		sc.known = true
		sc.offset = now - ntpNs
	}
	c.anchorExt = c.extend(rtpTime)
	c.anchorWall = ntpNs + sc.offset
	c.anchored, c.fromSR = true, true
}

// wall returns the wall time of RTP timestamp ts of a frame that arrived
// at arrival.
func (c *rtpClock) wall(ts uint32, arrival int64) int64 {
	ext := c.extend(ts)
	if !c.anchored {
		c.anchorExt, c.anchorWall, c.anchored = ext, arrival, true
	}
	w := c.anchorWall + ticksToNs(ext-c.anchorExt, c.rate)
	if d := w - arrival; d > maxClockError || d < -maxClockError {
		// Timestamps jumped, or a report was bogus: start over.
		c.anchorExt, c.anchorWall, c.fromSR = ext, arrival, false
		w = arrival
	}
	return w
}

// ticksToNs converts RTP clock ticks to nanoseconds without overflow.
func ticksToNs(ticks, rate int64) int64 {
	return ticks/rate*int64(time.Second) + ticks%rate*int64(time.Second)/rate
}
