package sfu

import (
	"time"
)

// Bandwidth probing. A delay-based estimator only learns about rates it
// is sent: once a subscriber's estimate has fallen (a bandwidth dip), the
// publisher is told to send little, so the estimate has nothing to grow
// from and can stay pinned at the floor for the rest of the call. Like
// libwebrtc and LiveKit, the SFU probes: now and then it pads the
// subscriber's video with padding-only packets up to a rate above the
// estimate for a short cluster, measures from the transport-cc feedback
// what the receiver actually got, and raises the estimate to what the link
// carried. A cluster that the link could not carry (the receive rate falls
// behind the send rate, or packets are lost) leaves the estimate where the
// receiver's rate puts it, and the next probe waits longer.
const (
	probeCeiling      = 2_500_000 // no probing at or above this estimate (720p needs about this)
	probeMaxRate      = 3_000_000 // bit/s a cluster aims at, at most
	probeMinStep      = 150_000   // a cluster aims at least this far above the estimate
	probeDuration     = 200 * time.Millisecond
	probeFirstDelay   = time.Second            // after the first feedback: let the call start first
	probeAfterRaise   = 500 * time.Millisecond // the next step up after a cluster that raised the estimate
	probeBackoffMin   = time.Second            // after a cluster that did not
	probeBackoffMax   = 3 * time.Second        // at most this long without a probe while below the ceiling
	probeStep         = 2.0                    // a cluster aims at this multiple of the estimate,
	probeStepAfterOK  = 3.0                    // this one right after a cluster the link carried (ramp up fast),
	probeStepWhenFull = 1.5                    // this one after a cluster that found the link full (little overload:
	// its excess fits a bottleneck's queue, so audio is not dropped to learn nothing new)
	probeResultLimit = time.Second // a cluster's feedback is awaited this long after its end
	probeSaturation  = 0.9         // receive rate below this share of the send rate: the link is full
	probeUtilisation = 0.95        // of a full link's receive rate is taken as the estimate
	probeLossLimit   = 0.1         // share of a cluster's packets lost that marks the link full
)

type probeState int

const (
	probeIdle     probeState = iota
	probeSending             // the cluster is being sent
	probeAwaiting            // sent; waiting for its feedback
)

// probeController decides when to probe, at what rate, and what a
// finished cluster says. It is driven by its owner (probingEstimator)
// with the time and the estimate; it does no I/O and is not safe for
// concurrent use.
type probeController struct {
	state      probeState
	id         uint16 // current cluster; 0 is never a cluster
	start, end time.Duration
	rate       int // bit/s the cluster aims at (media + padding)
	first      uint16
	last       uint16
	packets    int // sent in the cluster so far
	bytes      int
	next       time.Duration // earliest start of the next cluster; 0 = not scheduled yet
	backoff    time.Duration
	carried    bool          // the last cluster raised the estimate and the link was not full
	full       bool          // the last cluster found the link full
	evaluated  time.Duration // when the last cluster was evaluated
	lastTarget int           // the estimate at the previous poll

	// Results, for stats and tests.
	clusters, raises int
	lastResult       clusterResult
}

// activeCluster returns the id of the cluster a packet sent now belongs
// to, or 0.
func (c *probeController) activeCluster(now time.Duration) uint16 {
	if c.state != probeSending {
		return 0
	}
	if now >= c.end {
		c.state = probeAwaiting
		return 0
	}
	return c.id
}

// onSent counts a packet of the current cluster.
func (c *probeController) onSent(seq uint16, size int) {
	if c.packets == 0 {
		c.first = seq
	}
	c.last = seq
	c.packets++
	c.bytes += size
}

// deficit is how many bytes of padding the cluster needs now to keep to
// its rate; 0 when no cluster is being sent.
func (c *probeController) deficit(now time.Duration) int {
	if c.activeCluster(now) == 0 {
		return 0
	}
	want := int(float64(c.rate) / 8 * (now - c.start).Seconds())
	return max(want-c.bytes, 0)
}

// sending reports whether a cluster is being sent at now.
func (c *probeController) sending(now time.Duration) bool { return c.activeCluster(now) != 0 }

// poll is called with fresh feedback applied to h: it evaluates a finished
// cluster (returning a raised estimate, or 0 for no change) and reports
// whether a new cluster starts now. target is the current estimate and
// canProbe whether there is video to pad between.
func (c *probeController) poll(now time.Duration, target int, canProbe bool, h *sendHistory) (raise int, started bool) {
	c.activeCluster(now) // ends a cluster whose time is up
	if c.state == probeAwaiting && (now >= c.end+probeResultLimit || c.complete(h)) {
		raise = c.evaluate(now, target, h)
	}
	if c.next == 0 {
		c.next, c.backoff = now+probeFirstDelay, probeBackoffMin
	}
	// A falling estimate means a queue is building somewhere: probing into
	// it would only drop packets (audio among them). Wait until it has
	// held still for a while.
	if float64(target) < 0.95*float64(c.lastTarget) {
		c.next = max(c.next, now+probeBackoffMin)
	}
	c.lastTarget = target
	if c.state != probeIdle || now < c.next || !canProbe || max(target, raise) >= probeCeiling {
		return raise, false
	}
	base := max(target, raise)
	c.id++
	if c.id == 0 {
		c.id = 1
	}
	c.state, c.start, c.end = probeSending, now, now+probeDuration
	// What the last cluster said holds only for the next one in a row:
	// after a pause (the ceiling was reached, then the estimate fell) the
	// link may be another one.
	step, recent := probeStep, now-c.evaluated <= 2*probeBackoffMax
	switch {
	case c.carried && now-c.evaluated <= 2*probeAfterRaise:
		step = probeStepAfterOK
	case c.full && recent:
		step = probeStepWhenFull
	}
	c.rate = min(max(int(step*float64(base)), base+probeMinStep), probeMaxRate)
	c.packets, c.bytes = 0, 0
	c.clusters++
	return raise, true
}

// complete reports whether every packet of the awaited cluster has been
// reported on.
func (c *probeController) complete(h *sendHistory) bool {
	if c.packets == 0 {
		return true
	}
	for seq := c.first; ; seq++ {
		p := h.slot(seq)
		if p.valid && p.seq == seq && p.cluster == c.id && !p.acked && !p.lost {
			return false
		}
		if seq == c.last {
			return true
		}
	}
}

// evaluate reads the awaited cluster's result and schedules the next one.
func (c *probeController) evaluate(now time.Duration, target int, h *sendHistory) int {
	c.state = probeIdle
	var r clusterResult
	if c.packets > 0 {
		r = h.measure(c.id, c.first, c.last)
	}
	c.lastResult = r
	estimate, full := probeEstimate(r)
	raised := 0
	if estimate > float64(target)*1.05 {
		raised = int(estimate)
		c.raises++
	}
	c.carried, c.full, c.evaluated = !full && raised > 0, full && r.recvRate > 0, now
	if c.carried {
		c.next, c.backoff = now+probeAfterRaise, probeBackoffMin
		return raised
	}
	c.next = now + c.backoff
	c.backoff = min(2*c.backoff, probeBackoffMax)
	return raised
}

// probeEstimate turns a cluster's result into a rate the link carried and
// says whether the link was full. No estimate (0) from too few packets.
func probeEstimate(r clusterResult) (estimate float64, full bool) {
	if r.sendRate == 0 || r.recvRate == 0 {
		return 0, true
	}
	lossy := r.sent > 0 && float64(r.lost) > probeLossLimit*float64(r.sent)
	if r.recvRate < probeSaturation*r.sendRate || lossy {
		return probeUtilisation * r.recvRate, true
	}
	return min(r.sendRate, r.recvRate), false
}
