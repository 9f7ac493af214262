package sfu

import (
	"sync"
	"sync/atomic"
	"time"
)

// resendLimit bounds what one subscriber's NACKs make the SFU resend, as
// libwebrtc's sender does (RtpPacketHistory and the retransmission rate
// limiter): a packet is resent at most once per round trip, and
// retransmissions take at most half the subscriber's estimated rate.
// Without it a congested downlink collapses: every packet its queue drops
// is NACKed again every round trip (Chromium asks up to 10 times), each
// answer lands in the same full queue, and the retransmissions crowd out
// the media and audio (measured with Chromium behind a 300 kbit/s cap:
// ~420 retransmissions a second against ~30 video packets).
//
// libwebrtc gives retransmissions the whole target over a 1 s window, but
// its pacer holds media and retransmissions together to the pacing rate;
// the SFU forwards media unpaced, at up to the estimate, so resends come
// on top of it. The cost: a receiver that NACKs faster than its round
// trip (pion's generator at a fixed interval with a retry limit) gets one
// resend where it asked several times, and a lost resend stays lost; a
// publisher that ignores REMB sends more than the estimate, and half the
// estimate then repairs less (README, loss table).
//
// The subscriber's estimator sets the round trip and the rate after each
// transport-cc feedback; until then nothing is limited. A nil
// *resendLimit limits nothing.
type resendLimit struct {
	rtt   atomic.Int64 // ns, from transport-cc feedback; 0: unknown
	rate  atomic.Int64 // bit/s; 0: unknown
	clock func() time.Duration

	refusedRTT, refusedRate atomic.Uint64

	mu      sync.Mutex
	tokens  float64 // bytes
	at      time.Duration
	started bool
}

const (
	// resendGapShare of the round trip must pass before a packet is resent
	// again: a NACK repeated because the retransmission was lost arrives
	// about one round trip after it was sent, give or take jitter.
	resendGapShare = 0.75
	// resendShare of the estimated rate is what retransmissions may
	// take; resendBurst of it at once (a lost keyframe: ~30 kB at 2
	// Mbit/s fits).
	resendShare = 0.5
	resendBurst = 500 * time.Millisecond
)

func newResendLimit() *resendLimit { return &resendLimit{clock: monoClock()} }

// update takes the subscriber's round trip and estimated rate.
func (l *resendLimit) update(rtt time.Duration, rate int) {
	if l == nil {
		return
	}
	if rtt > 0 {
		l.rtt.Store(int64(rtt))
	}
	if rate > 0 {
		l.rate.Store(int64(rate))
	}
}

// gap is how long after a resend the same packet may be resent again.
func (l *resendLimit) gap() time.Duration {
	if l == nil {
		return 0
	}
	return time.Duration(resendGapShare * float64(l.rtt.Load()))
}

// take reports whether size more bytes may be resent now, and if so
// counts them.
func (l *resendLimit) take(size int) bool {
	if l == nil {
		return true
	}
	rate := l.rate.Load()
	if rate <= 0 {
		return true
	}
	perSec := resendShare * float64(rate) / 8
	burst := perSec * resendBurst.Seconds()
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.clock()
	if !l.started {
		l.tokens, l.started = burst, true
	} else {
		l.tokens = min(burst, l.tokens+perSec*(now-l.at).Seconds())
	}
	l.at = now
	if l.tokens < float64(size) {
		l.refusedRate.Add(1)
		return false
	}
	l.tokens -= float64(size)
	return true
}

// refused counts the resends held back: too soon after the last resend
// of the same packet, and over the rate.
func (l *resendLimit) refused() (soon, rate uint64) {
	if l == nil {
		return 0, 0
	}
	return l.refusedRTT.Load(), l.refusedRate.Load()
}
