// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package gcc

import (
	"time"
)

type arrivalGroupAccumulator struct {
	interDepartureThreshold          time.Duration
	interArrivalThreshold            time.Duration
	interGroupDelayVariationTreshold time.Duration
}

func newArrivalGroupAccumulator() *arrivalGroupAccumulator {
	return &arrivalGroupAccumulator{
		interDepartureThreshold:          5 * time.Millisecond,
		interArrivalThreshold:            5 * time.Millisecond,
		interGroupDelayVariationTreshold: 0,
	}
}

// arrivalGroupState is the accumulator's state between feedbacks.
type arrivalGroupState struct {
	init    bool
	group   arrivalGroup
	onGroup func(arrivalGroup)
}

// onAcks adds one feedback's acknowledgments, handing each completed
// group to st.onGroup.
func (a *arrivalGroupAccumulator) onAcks(st *arrivalGroupState, acks []Acknowledgment) {
	for _, next := range acks {
		if !st.init {
			st.group = newArrivalGroup(next)
			st.init = true

			continue
		}
		if next.Arrival.Before(st.group.arrival) {
			// ignore out of order arrivals
			continue
		}
		if next.Departure.After(st.group.departure) {
			// A sequence of packets which are sent within a burst_time interval
			// constitute a group.
			if interDepartureTimePkt(st.group, next) <= a.interDepartureThreshold {
				st.group.add(next)

				continue
			}

			// A Packet which has an inter-arrival time less than burst_time and
			// an inter-group delay variation d(i) less than 0 is considered
			// being part of the current group of packets.
			if interArrivalTimePkt(st.group, next) <= a.interArrivalThreshold &&
				interGroupDelayVariationPkt(st.group, next) < a.interGroupDelayVariationTreshold {
				st.group.add(next)

				continue
			}

			st.onGroup(st.group)
			st.group = newArrivalGroup(next)
		}
	}
}

func interArrivalTimePkt(group arrivalGroup, ack Acknowledgment) time.Duration {
	return ack.Arrival.Sub(group.arrival)
}

func interDepartureTimePkt(group arrivalGroup, ack Acknowledgment) time.Duration {
	if group.packets == 0 {
		return 0
	}

	return ack.Departure.Sub(group.departure)
}

func interGroupDelayVariationPkt(group arrivalGroup, ack Acknowledgment) time.Duration {
	return ack.Arrival.Sub(group.arrival) - ack.Departure.Sub(group.departure)
}
