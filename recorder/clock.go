package recorder

import "time"

const (
	// ntpUnixOffset is the NTP time (seconds since 1900) of the Unix epoch.
	ntpUnixOffset = 2208988800
	// maxClockError is how far a mapped time may stray from the arrival
	// time before the mapping is considered broken and restarted.
	maxClockError = int64(10 * time.Second)
	// slewDiv: a change of the mapping (a sender report that disagrees
	// with the anchor so far) is applied at 1/slewDiv of the media time
	// that passes, so frames never go back in time or bunch up (players
	// and ffmpeg choke on frames closer than a frame interval); a 50 ms
	// correction is done after 500 ms.
	slewDiv = 10
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
	mapped     bool  // wall has returned a time
	lastOut    int64 // extended timestamp of the latest frame mapped
	adjust     int64 // ns added to the mapping, slewing to 0
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
	before := c.at(c.lastOut) + c.adjust
	c.anchorExt = c.extend(rtpTime)
	c.anchorWall = ntpNs + sc.offset
	c.anchored, c.fromSR = true, true
	if c.mapped {
		c.adjust = before - c.at(c.lastOut) // continue from where frames are
	}
}

// at maps an extended timestamp by the anchor alone.
func (c *rtpClock) at(ext int64) int64 { return c.anchorWall + ticksToNs(ext-c.anchorExt, c.rate) }

// wall returns the wall time of RTP timestamp ts of a frame that arrived
// at arrival, and the extended timestamp.
func (c *rtpClock) wall(ts uint32, arrival int64) (int64, int64) {
	ext := c.extend(ts)
	if !c.anchored {
		c.anchorExt, c.anchorWall, c.anchored = ext, arrival, true
	}
	if c.mapped && c.adjust != 0 && ext > c.lastOut {
		step := ticksToNs(ext-c.lastOut, c.rate) / slewDiv
		if c.adjust > 0 {
			c.adjust = max(0, c.adjust-step)
		} else {
			c.adjust = min(0, c.adjust+step)
		}
	}
	w := c.at(ext) + c.adjust
	if d := w - arrival; d > maxClockError || d < -maxClockError {
		// Timestamps jumped, or a report was bogus: start over.
		c.anchorExt, c.anchorWall, c.fromSR, c.adjust = ext, arrival, false, 0
		w = arrival
	}
	if !c.mapped || ext > c.lastOut {
		c.lastOut, c.mapped = ext, true
	}
	return w, ext
}

// remap drops the slew: for frames not written yet, the latest anchor
// holds from the start.
func (c *rtpClock) remap() { c.adjust = 0 }

// ticksToNs converts RTP clock ticks to nanoseconds without overflow.
func ticksToNs(ticks, rate int64) int64 {
	return ticks/rate*int64(time.Second) + ticks%rate*int64(time.Second)/rate
}
