// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package gcc

import (
	"fmt"
	"time"
)

// arrivalGroup is a group of packets sent within a burst. Only its size,
// first departure and last arrival are ever used, so it keeps a count
// rather than a copy of every acknowledgment (pion's version appends each
// one: a slice allocated per group and grown per packet, the largest
// share of this package's garbage).
type arrivalGroup struct {
	packets   int
	departure time.Time
	arrival   time.Time
}

func newArrivalGroup(a Acknowledgment) arrivalGroup {
	return arrivalGroup{
		packets:   1,
		departure: a.Departure,
		arrival:   a.Arrival,
	}
}

func (g *arrivalGroup) add(a Acknowledgment) {
	g.packets++
	g.arrival = a.Arrival
}

func (g arrivalGroup) String() string {
	s := "ARRIVALGROUP:\n"
	s += fmt.Sprintf("\tARRIVAL:\t%v\n", int64(float64(g.arrival.UnixNano())/1e+6))
	s += fmt.Sprintf("\tDEPARTURE:\t%v\n", int64(float64(g.departure.UnixNano())/1e+6))
	s += fmt.Sprintf("\tPACKETS:\t%d\n", g.packets)

	return s
}
