// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package gcc

import (
	"errors"
	"math"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

const (
	transportCCURI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"
	latestBitrate  = 10_000
	minBitrate     = 5_000
	maxBitrate     = 50_000_000
)

// ErrSendSideBWEClosed is raised when SendSideBWE.WriteRTCP is called after SendSideBWE.Close.
var ErrSendSideBWEClosed = errors.New("SendSideBwe closed")

// Pacer is the interface implemented by packet pacers.
type Pacer interface {
	interceptor.RTPWriter
	AddStream(ssrc uint32, writer interceptor.RTPWriter)
	SetTargetBitrate(int)
	Close() error
}

// Stats contains internal statistics of the bandwidth estimator.
type Stats struct {
	LossStats
	DelayStats
}

// SendSideBWE implements a combination of loss and delay based GCC.
type SendSideBWE struct {
	pacer           Pacer
	lossController  *lossBasedBandwidthEstimator
	delayController *delayController
	feedbackAdapter *FeedbackAdapter

	onTargetBitrateChange func(bitrate int)

	acks sync.Pool // of *[]Acknowledgment (ackBuffer)

	lock          sync.Mutex
	latestStats   Stats
	latestBitrate int
	latestRTT     time.Duration
	minBitrate    int
	maxBitrate    int

	close     chan struct{}
	closeLock sync.RWMutex

	loggerFactory logging.LoggerFactory
}

// Option configures a bandwidth estimator.
type Option func(*SendSideBWE) error

// SendSideBWEInitialBitrate sets the initial bitrate of new GCC interceptors.
func SendSideBWEInitialBitrate(rate int) Option {
	return func(e *SendSideBWE) error {
		e.latestBitrate = rate

		return nil
	}
}

// SendSideBWEMaxBitrate sets the initial bitrate of new GCC interceptors.
func SendSideBWEMaxBitrate(rate int) Option {
	return func(e *SendSideBWE) error {
		e.maxBitrate = rate

		return nil
	}
}

// SendSideBWEMinBitrate sets the initial bitrate of new GCC interceptors.
func SendSideBWEMinBitrate(rate int) Option {
	return func(e *SendSideBWE) error {
		e.minBitrate = rate

		return nil
	}
}

// SendSideBWEPacer sets the pacing algorithm to use.
func SendSideBWEPacer(p Pacer) Option {
	return func(e *SendSideBWE) error {
		e.pacer = p

		return nil
	}
}

// WithLoggerFactory sets the logger factory for the bandwidth estimator.
func WithLoggerFactory(factory logging.LoggerFactory) Option {
	return func(e *SendSideBWE) error {
		e.loggerFactory = factory

		return nil
	}
}

// NewSendSideBWE creates a new sender side bandwidth estimator.
func NewSendSideBWE(opts ...Option) (*SendSideBWE, error) {
	send := &SendSideBWE{
		pacer:                 nil,
		lossController:        nil,
		delayController:       nil,
		feedbackAdapter:       NewFeedbackAdapter(),
		onTargetBitrateChange: nil,
		lock:                  sync.Mutex{},
		latestStats:           Stats{},
		latestBitrate:         latestBitrate,
		minBitrate:            minBitrate,
		maxBitrate:            maxBitrate,
		close:                 make(chan struct{}),
	}
	for _, opt := range opts {
		if err := opt(send); err != nil {
			return nil, err
		}
	}
	if send.loggerFactory == nil {
		send.loggerFactory = logging.NewDefaultLoggerFactory()
	}
	if send.pacer == nil {
		send.pacer = newLeakyBucketPacer(send.latestBitrate, send.loggerFactory)
	}
	send.lossController = newLossBasedBWE(send.latestBitrate, send.minBitrate, send.maxBitrate, send.loggerFactory)
	send.delayController = newDelayController(delayControllerConfig{
		nowFn:          time.Now,
		initialBitrate: send.latestBitrate,
		minBitrate:     send.minBitrate,
		maxBitrate:     send.maxBitrate,
	}, send.loggerFactory)

	send.delayController.onUpdate(send.onDelayUpdate)

	return send, nil
}

// AddStream adds a new stream to the bandwidth estimator.
func (e *SendSideBWE) AddStream(info *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	var hdrExtID uint8
	for _, e := range info.RTPHeaderExtensions {
		if e.URI == transportCCURI {
			hdrExtID = uint8(e.ID) //nolint:gosec // G115

			break
		}
	}

	e.pacer.AddStream(info.SSRC, interceptor.RTPWriterFunc(
		func(header *rtp.Header, payload []byte, attributes interceptor.Attributes) (int, error) {
			// The stream's extension id is known here: no attributes map
			// per packet to carry it to the adapter (pion's writer made one).
			var err error
			if hdrExtID != 0 {
				err = e.feedbackAdapter.onSentTWCC(time.Now(), hdrExtID, header, len(payload))
			} else {
				err = e.feedbackAdapter.OnSent(time.Now(), header, len(payload), attributes)
			}
			if err != nil {
				return 0, err
			}

			return writer.Write(header, payload, attributes)
		},
	))

	return e.pacer
}

// ackBuffer returns a slice to unpack a feedback's acknowledgments into:
// the controllers copy what they keep, so one feedback's slice serves the
// next (feedback arrives on several goroutines at once, hence the pool).
func (e *SendSideBWE) ackBuffer() *[]Acknowledgment {
	if b, ok := e.acks.Get().(*[]Acknowledgment); ok {
		return b
	}
	return new([]Acknowledgment)
}

// WriteRTCP adds some RTCP feedback to the bandwidth estimator.
func (e *SendSideBWE) WriteRTCP(pkts []rtcp.Packet, _ interceptor.Attributes) error {
	now := time.Now()
	e.closeLock.RLock()
	defer e.closeLock.RUnlock()

	if e.isClosed() {
		return ErrSendSideBWEClosed
	}

	buf := e.ackBuffer()
	defer e.acks.Put(buf)
	for _, pkt := range pkts {
		switch fb := pkt.(type) {
		case *rtcp.TransportLayerCC:
			acks, err := e.feedbackAdapter.onTransportCCFeedback(*buf, fb)
			if err != nil {
				return err
			}
			*buf = acks[:0] // nothing below keeps the slice
			e.onAcks(now, acks, latestArrival(acks))
		case *rtcp.CCFeedbackReport:
			acks := e.feedbackAdapter.OnRFC8888Feedback(now, fb)
			e.onAcks(now, acks, ntpToTime(uint64(fb.ReportTimestamp)<<16))
		}
	}

	return nil
}

// WriteAcks feeds one transport-wide feedback's acknowledgments, received
// at now, that the caller unpacked from a send history of its own (one
// per reported status, as FeedbackAdapter unpacks them: a packet not
// received has a zero Arrival). Then the estimator's own history (fed
// by the writer AddStream returns) is not used. acks is not kept.
func (e *SendSideBWE) WriteAcks(now time.Time, acks []Acknowledgment) error {
	e.closeLock.RLock()
	defer e.closeLock.RUnlock()

	if e.isClosed() {
		return ErrSendSideBWEClosed
	}
	e.onAcks(now, acks, latestArrival(acks))

	return nil
}

// latestArrival is the latest arrival among acks (the feedback's send
// time on the receiver's clock, as far as the sender can tell).
func latestArrival(acks []Acknowledgment) time.Time {
	var latest time.Time
	for i, ack := range acks {
		if i == 0 || ack.Arrival.After(latest) {
			latest = ack.Arrival
		}
	}

	return latest
}

// onAcks runs one feedback's acknowledgments through the controllers;
// e.closeLock is read-held.
func (e *SendSideBWE) onAcks(now time.Time, acks []Acknowledgment, feedbackSentTime time.Time) {
	feedbackMinRTT := time.Duration(math.MaxInt)
	for _, ack := range acks {
		if ack.Arrival.IsZero() {
			continue
		}
		pendingTime := feedbackSentTime.Sub(ack.Arrival)
		rtt := now.Sub(ack.Departure) - pendingTime
		feedbackMinRTT = time.Duration(min(int(rtt), int(feedbackMinRTT)))
	}
	if feedbackMinRTT < math.MaxInt {
		e.delayController.updateRTT(feedbackMinRTT)
		e.lock.Lock()
		e.latestRTT = feedbackMinRTT
		e.lock.Unlock()
	}

	e.lossController.updateLossEstimate(now, acks)
	e.delayController.updateDelayEstimate(acks)
}

// GetTargetBitrate returns the current target bitrate in bits per second.
func (e *SendSideBWE) GetTargetBitrate() int {
	e.lock.Lock()
	defer e.lock.Unlock()

	return e.latestBitrate
}

// RTT returns the round trip measured from the latest feedback (send to
// feedback, less the time the receiver held the report), 0 before any.
func (e *SendSideBWE) RTT() time.Duration {
	e.lock.Lock()
	defer e.lock.Unlock()

	return e.latestRTT
}

// GetStats returns some internal statistics of the bandwidth estimator.
func (e *SendSideBWE) GetStats() map[string]any {
	e.lock.Lock()
	defer e.lock.Unlock()

	return map[string]any{
		"lossTargetBitrate":  e.latestStats.LossStats.TargetBitrate,
		"averageLoss":        e.latestStats.AverageLoss,
		"delayTargetBitrate": e.latestStats.DelayStats.TargetBitrate,
		"delayMeasurement":   float64(e.latestStats.Measurement.Microseconds()) / 1000.0,
		"delayEstimate":      float64(e.latestStats.Estimate.Microseconds()) / 1000.0,
		"delayThreshold":     float64(e.latestStats.Threshold.Microseconds()) / 1000.0,
		"usage":              e.latestStats.Usage.String(),
		"state":              e.latestStats.State.String(),
	}
}

// OnTargetBitrateChange sets the callback that is called when the target
// bitrate in bits per second changes.
func (e *SendSideBWE) OnTargetBitrateChange(f func(bitrate int)) {
	e.onTargetBitrateChange = f
}

// isClosed returns true if SendSideBWE is closed.
func (e *SendSideBWE) isClosed() bool {
	select {
	case <-e.close:
		return true
	default:
		return false
	}
}

// Close stops and closes the bandwidth estimator.
func (e *SendSideBWE) Close() error {
	e.closeLock.Lock()
	defer e.closeLock.Unlock()

	if err := e.delayController.Close(); err != nil {
		return err
	}
	close(e.close)

	return e.pacer.Close()
}

func (e *SendSideBWE) onDelayUpdate(delayStats DelayStats) {
	e.lock.Lock()
	defer e.lock.Unlock()

	lossStats := e.lossController.getEstimate(delayStats.TargetBitrate)
	bitrateChanged := false
	bitrate := min(delayStats.TargetBitrate, lossStats.TargetBitrate)
	if bitrate != e.latestBitrate {
		bitrateChanged = true
		e.latestBitrate = bitrate
		e.pacer.SetTargetBitrate(e.latestBitrate)
	}

	if bitrateChanged && e.onTargetBitrateChange != nil {
		go e.onTargetBitrateChange(bitrate)
	}

	e.latestStats = Stats{
		LossStats:  lossStats,
		DelayStats: delayStats,
	}
}
