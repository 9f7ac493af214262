//go:build race

package sfu

// raceEnabled: sync.Pool drops items at random under the race detector,
// so allocation counts do not hold there.
const raceEnabled = true
