//go:build linux

package sfu

import (
	"testing"

	"videochat/internal/rtctest"
)

// With three readers per media address, calls between real pion clients
// go over the fast path, intact, and their media is spread over several
// readers. The kernel picks a socket per client address at random (a
// hash), so calls are added until two readers have forwarded media: one
// call (two clients) does with probability at least 2/3; eight calls
// (16 clients) fail to with probability at most 3^-15 (1 in 14 million).
func TestMediaReadersCarryCalls(t *testing.T) {
	s := newTestSFUWith(t, Config{MediaReaders: 3})
	var clients []*testClient
	for calls := 1; calls <= 8; calls++ {
		a, b := fastCall(t, s, rtctest.Options{})
		clients = append(clients, a, b)
		before := s.ReceivePath()
		moreVideo(t, 100, clients...)
		checkFastShare(t, before, s.ReceivePath())
		if busy := busyReaders(t, s); busy >= 2 {
			for _, c := range clients {
				checkClean(t, c)
			}
			if st := s.ReceivePath(); st.Overflow != 0 {
				t.Errorf("%d datagrams for pion dropped", st.Overflow)
			}
			return
		}
	}
	t.Fatal("all media of 8 calls went through one reader")
}

// busyReaders counts the readers that forwarded fast-path packets.
func busyReaders(t *testing.T, s *SFU) int {
	t.Helper()
	busy := 0
	taken := s.MediaReaders()
	for _, n := range taken {
		if n > 0 {
			busy++
		}
	}
	t.Logf("fast-path packets per reader (3 per media address): %v", taken)
	return busy
}
