// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package gcc

import (
	"sync"
	"time"

	"github.com/pion/logging"
)

// DelayStats contains some internal statistics of the delay based congestion
// controller.
type DelayStats struct {
	Measurement      time.Duration
	Estimate         time.Duration
	Threshold        time.Duration
	LastReceiveDelta time.Duration

	Usage         usage
	State         state
	TargetBitrate int
}

type now func() time.Time

// delayController feeds each feedback's acknowledgments to the arrival
// group accumulator and the receive rate calculator on the caller's
// goroutine, one feedback at a time (pion's version hands them to two
// goroutines per PeerConnection over unbuffered channels; this project
// runs them inline: two goroutines and their stacks fewer per
// PeerConnection, the same order of work).
type delayController struct {
	mu     sync.Mutex // serialises updateDelayEstimate (RTCP readers of several senders)
	groups arrivalGroupState
	rate   rateState

	*arrivalGroupAccumulator
	*rateController

	onUpdateCallback func(DelayStats)

	log logging.LeveledLogger
}

type delayControllerConfig struct {
	nowFn          now
	initialBitrate int
	minBitrate     int
	maxBitrate     int
}

func newDelayController(delayConfig delayControllerConfig, loggerFactory logging.LoggerFactory) *delayController {
	delayController := &delayController{
		arrivalGroupAccumulator: nil,
		rateController:          nil,
		onUpdateCallback:        nil,
		log:                     loggerFactory.NewLogger("gcc_delay_controller"),
	}

	rateController := newRateController(
		delayConfig.nowFn, delayConfig.initialBitrate, delayConfig.minBitrate, delayConfig.maxBitrate,
		func(ds DelayStats) {
			// No log here: formatting ds cost an allocation per arrival
			// group even with the level off (5 MB in 6 s at 50 calls).
			if delayController.onUpdateCallback != nil {
				delayController.onUpdateCallback(ds)
			}
		},
	)
	delayController.rateController = rateController
	overuseDetector := newOveruseDetector(newAdaptiveThreshold(), 10*time.Millisecond, rateController.onDelayStats)
	slopeEstimator := newSlopeEstimator(newKalman(), overuseDetector.onDelayStats)
	arrivalGroupAccumulator := newArrivalGroupAccumulator()

	rc := newRateCalculator(500 * time.Millisecond)

	delayController.arrivalGroupAccumulator = arrivalGroupAccumulator
	delayController.groups.onGroup = slopeEstimator.onArrivalGroup
	delayController.rate = rateState{calc: rc, onRate: rateController.onReceivedRate}

	return delayController
}

func (d *delayController) onUpdate(f func(DelayStats)) {
	d.onUpdateCallback = f
}

func (d *delayController) updateDelayEstimate(acks []Acknowledgment) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.rate.calc.onAcks(&d.rate, acks)
	d.arrivalGroupAccumulator.onAcks(&d.groups, acks)
}

func (d *delayController) Close() error {
	return nil
}
