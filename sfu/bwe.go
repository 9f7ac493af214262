package sfu

import (
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/rtcp"
)

// Bandwidth adaptation across the SFU: every subscriber's downlink is
// estimated from its transport-wide congestion control feedback (pion's
// GCC, used as an estimator only: no pacing of forwarded media, plus our
// own probes: prober.go), and each
// publisher is told, by REMB, the least its subscribers can take. REMB caps
// the publisher's whole send rate; browsers give audio its share first, so
// video gives way and audio is not starved.
const (
	bweInitial   = 1_500_000
	bweMin       = 100_000
	bweMax       = 6_000_000
	rembInterval = 500 * time.Millisecond
)

// estimators hands each new PeerConnection's estimator from the
// interceptor factory (which knows only the PeerConnection's id) to the
// participant that created it.
type estimators struct{ m sync.Map }

func (e *estimators) put(id string, est cc.BandwidthEstimator) { e.m.Store(id, est) }

func (e *estimators) take(id string) cc.BandwidthEstimator {
	if v, ok := e.m.LoadAndDelete(id); ok {
		return v.(cc.BandwidthEstimator)
	}
	return nil
}

// registerCongestionControl adds the cc interceptor with our estimator,
// which also keeps lim (the NACK responder's) up to date.
func registerCongestionControl(reg *interceptor.Registry, est *estimators, lim *resendLimit) error {
	f, err := cc.NewInterceptor(func() (cc.BandwidthEstimator, error) {
		e, err := newProbingEstimator()
		if err != nil {
			return nil, err
		}
		e.lim = lim
		return e, nil
	})
	if err != nil {
		return err
	}
	f.OnNewPeerConnection(est.put)
	reg.Add(f)
	return nil
}

// maybeSendREMB runs on the read loop of a video upTrack: at most every
// rembInterval it tells the publisher the lowest downlink estimate among
// the subscribers of this track. now is the packet's arrival since
// u.epoch.
func (u *upTrack) maybeSendREMB(now time.Duration) {
	if u.rembSent && now-u.lastREMB < rembInterval {
		return
	}
	u.lastREMB, u.rembSent = now, true
	limit := u.subscriberLimit()
	if limit <= 0 {
		return
	}
	u.stats.remb.Store(uint64(limit))
	_ = u.writeRTCP([]rtcp.Packet{&rtcp.ReceiverEstimatedMaximumBitrate{
		Bitrate: float32(limit), SSRCs: []uint32{uint32(u.track.SSRC())},
	}})
}

// subscriberLimit is the video bitrate the slowest subscriber can take, or
// 0 if no subscriber has an estimate.
func (u *upTrack) subscriberLimit() int {
	limit := 0
	for _, d := range u.loadSinks() {
		if d.bwe == nil {
			continue
		}
		v := max(d.bwe.GetTargetBitrate(), bweMin)
		if limit == 0 || v < limit {
			limit = v
		}
	}
	return limit
}
