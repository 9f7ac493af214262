//go:build !race

package gcc

const raceEnabled = false
