// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package gcc

import (
	"time"
)

type rateCalculator struct {
	window time.Duration
}

func newRateCalculator(window time.Duration) *rateCalculator {
	return &rateCalculator{
		window: window,
	}
}

// rateState is the calculator's state between feedbacks.
type rateState struct {
	calc    *rateCalculator
	history []Acknowledgment
	init    bool
	sum     int
	onRate  func(int)
}

// onAcks adds one feedback's acknowledgments to the window and reports
// the receive rate after each. The window's slice is compacted in place,
// so it stops allocating once it has held a window's worth.
func (c *rateCalculator) onAcks(st *rateState, acks []Acknowledgment) {
	for _, next := range acks {
		if next.Arrival.IsZero() {
			// Ignore packet if it didn't arrive
			continue
		}
		st.history = append(st.history, next)
		st.sum += next.Size

		if !st.init {
			st.init = true
			// Don't know any timeframe here, only arrival of last packet,
			// which is by definition in the window that ends with the last
			// arrival time
			st.onRate(next.Size * 8)

			continue
		}

		del := 0
		deadline := next.Arrival.Add(-c.window)
		for _, ack := range st.history {
			if !ack.Arrival.Before(deadline) {
				break
			}
			del++
			st.sum -= ack.Size
		}
		if del > 0 {
			n := copy(st.history, st.history[del:])
			st.history = st.history[:n]
		}
		if len(st.history) == 0 {
			st.onRate(0)

			continue
		}
		dt := next.Arrival.Sub(st.history[0].Arrival)
		bits := 8 * st.sum
		rate := int(float64(bits) / dt.Seconds())
		st.onRate(rate)
	}
}
