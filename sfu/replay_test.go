package sfu

import (
	"math/rand/v2"
	"testing"

	"github.com/pion/transport/v4/replaydetector"
)

// The ring window answers exactly as pion's sliding window does, over
// random runs of new, reordered, replayed, too old and far ahead indexes.
func TestRingReplayMatchesPion(t *testing.T) {
	for _, size := range []uint{64, 1024} {
		for seed := range uint64(20) {
			rng := rand.New(rand.NewPCG(seed, uint64(size)))
			ours, pion := newRingReplay(size, srtpMaxIndex), replaydetector.New(size, srtpMaxIndex)
			pa := pion.(replaydetector.CheckAccepter)
			var latest uint64
			for n := range 20000 {
				var i uint64
				switch r := rng.IntN(100); {
				case r < 60:
					i = latest + 1 + uint64(rng.IntN(3))
				case r < 90: // reordered or replayed, some beyond the window
					i = latest - min(latest, uint64(rng.IntN(int(size)*2)))
				case r < 98:
					i = latest + uint64(rng.IntN(int(size)*3))
				default:
					i = uint64(rng.Int64N(1 << 50)) // beyond the maximum at times
				}
				a, b := ours.CheckSeq(i), pa.CheckSeq(i)
				if a.Passed() != b.Passed() {
					t.Fatalf("size %d seed %d step %d: index %d (latest %d): ring %v, pion %v", size, seed, n, i, latest, a.Passed(), b.Passed())
				}
				if !a.Passed() || rng.IntN(10) == 0 { // some pass the check but fail authentication
					continue
				}
				if x, y := ours.Accept(a), pa.Accept(b); x != y {
					t.Fatalf("size %d seed %d step %d: accept %d: ring %v, pion %v", size, seed, n, i, x, y)
				}
				latest = max(latest, i)
			}
		}
	}
}

func TestRingReplayAllocatesNothing(t *testing.T) {
	r := newRingReplay(srtpReplayWindow, srtpMaxIndex)
	i := uint64(0)
	if a := testing.AllocsPerRun(1000, func() {
		i++
		r.Accept(r.CheckSeq(i))
		r.Accept(r.CheckSeq(i - 5))
	}); a != 0 {
		t.Errorf("%.1f allocations per packet", a)
	}
}

func BenchmarkReplayWindow(b *testing.B) {
	b.Run("ring", func(b *testing.B) {
		r := newRingReplay(srtpReplayWindow, srtpMaxIndex)
		for i := range uint64(b.N) {
			r.Accept(r.CheckSeq(i + 1))
		}
	})
	b.Run("pion", func(b *testing.B) {
		r := replaydetector.New(srtpReplayWindow, srtpMaxIndex).(replaydetector.CheckAccepter)
		for i := range uint64(b.N) {
			r.Accept(r.CheckSeq(i + 1))
		}
	})
}
