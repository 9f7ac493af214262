package main

import (
	"fmt"
	"runtime/debug"
)

// GC is the garbage collector policy (-gc-percent, -memory-limit).
//
// A call's live heap is mostly packet buffers that stay (send rings,
// pion's read buffers), and the SFU allocates next to nothing per
// forwarded packet, so the collector runs rarely and the heap it lets
// grow between collections (GOGC percent of the live heap) is pure
// overhead in RSS: with Go's default of 100, about as much as the live
// heap itself. See the README's "Memory per call" for the measurements
// behind the default.
type GC struct {
	Percent     int   // GOGC; negative: off (then set MemoryLimit)
	MemoryLimit int64 // soft limit in MiB (GOMEMLIMIT); 0: none

	percentSet, limitSet bool // given as a flag or VIDEOCHAT_ variable
}

// defaultGCPercent is -gc-percent's default.
const defaultGCPercent = 50

// apply sets the policy unless the environment's GOGC or GOMEMLIMIT,
// which the runtime has read already, say otherwise: an operator's usual
// Go settings win over the defaults, explicit flags over both.
// It returns what is in force, for the log.
func (g GC) apply(env func(string) (string, bool)) string {
	if _, set := env("GOGC"); !set || g.percentSet {
		debug.SetGCPercent(g.Percent)
	}
	if _, set := env("GOMEMLIMIT"); (!set && g.MemoryLimit > 0) || g.limitSet {
		limit := g.MemoryLimit << 20
		if limit <= 0 {
			limit = 1<<63 - 1 // math.MaxInt64: none
		}
		debug.SetMemoryLimit(limit)
	}
	percent := debug.SetGCPercent(-1)
	debug.SetGCPercent(percent)
	limit := debug.SetMemoryLimit(-1)
	if limit == 1<<63-1 {
		return fmt.Sprintf("GOGC=%d, no memory limit", percent)
	}
	return fmt.Sprintf("GOGC=%d, memory limit %d MiB", percent, limit>>20)
}
