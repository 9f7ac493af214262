package rtctest

import "testing"

func TestReceivedLoss(t *testing.T) {
	var r Received
	for _, seq := range []uint16{65533, 65535, 65534, 0, 0, 3, 2, 65532} {
		r.track(seq)
		r.Packets++
	}
	// 65532..3 is 8 numbers; 1 never came; 0 came twice.
	if r.Lost() != 1 || r.Duplicates != 1 || r.Late != 3 {
		t.Fatalf("lost %d, duplicates %d, late %d; want 1, 1, 3", r.Lost(), r.Duplicates, r.Late)
	}
	// 70,000 packets later, the same numbers are new again.
	for i := range 70000 {
		r.track(uint16(4 + i))
		r.Packets++
	}
	if r.Lost() != 1 || r.Duplicates != 1 {
		t.Fatalf("after a wrap: lost %d, duplicates %d; want 1, 1", r.Lost(), r.Duplicates)
	}
}
