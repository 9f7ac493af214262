package sfu

import (
	"testing"
	"time"

	"github.com/pion/rtp"
)

// limitedRing is a send ring of 1,000-byte packets 0..n-1 with a resend
// limit, both on one fake clock.
func limitedRing(t *testing.T, n int, rtt time.Duration, rate int) (*sendRing, *sentPackets, *time.Duration) {
	t.Helper()
	now := new(time.Duration)
	*now = time.Second
	clock := func() time.Duration { return *now }
	lim := &resendLimit{clock: clock}
	lim.update(rtt, rate)
	r := newSendRing(ringSize{minBytes: 256 << 10, maxBytes: 256 << 10, ringPackets: 1024}, clock)
	sent := &sentPackets{}
	r.writer, r.lim = sent, lim
	r.rtxSSRC, r.rtxPT = 2000, 97
	for seq := range uint16(n) {
		h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, SSRC: 1000}
		r.store(&h, make([]byte, 1000-h.MarshalSize()-2))
	}
	return r, sent, now
}

// A packet NACKed again within the round trip is not resent again (the
// first answer is still on its way); after three quarters of a round trip
// it is.
func TestResendOncePerRoundTrip(t *testing.T) {
	r, sent, now := limitedRing(t, 10, 100*time.Millisecond, 0)
	var s resendScratch
	r.resend(5, &s)
	r.resend(5, &s)
	*now += 50 * time.Millisecond
	r.resend(5, &s)
	if len(sent.pkts) != 1 {
		t.Fatalf("packet 5 NACKed three times within 50 ms of a 100 ms round trip: resent %d times, want 1", len(sent.pkts))
	}
	r.resend(6, &s) // another packet is not held back
	*now += 30 * time.Millisecond
	r.resend(5, &s)
	if len(sent.pkts) != 3 {
		t.Fatalf("after 80 ms: %d resends, want 3 (5, 6, 5)", len(sent.pkts))
	}
	if soon, rate := r.lim.refused(); soon != 2 || rate != 0 {
		t.Fatalf("refused %d too soon and %d over the rate, want 2 and 0", soon, rate)
	}
}

// Retransmissions take at most half the estimated rate: half of 320
// kbit/s is 20 kB a second, so of 40 kB NACKed at once 10 go (the burst
// of half a second), and half a second later 10 more.
func TestResendRateLimit(t *testing.T) {
	r, sent, now := limitedRing(t, 80, 0, 320_000)
	var s resendScratch
	for seq := range uint16(40) {
		r.resend(seq, &s)
	}
	if len(sent.pkts) != 10 {
		t.Fatalf("40 packets of 1 kB NACKed at 320 kbit/s: %d resent, want 10", len(sent.pkts))
	}
	*now += 500 * time.Millisecond
	for seq := uint16(40); seq < 80; seq++ {
		r.resend(seq, &s)
	}
	if len(sent.pkts) != 20 {
		t.Fatalf("half a second later: %d resent in all, want 20", len(sent.pkts))
	}
	if _, rate := r.lim.refused(); rate != 60 {
		t.Fatalf("%d refused over the rate, want 60", rate)
	}
}

// Until the estimator has spoken (no round trip, no rate) nothing is held
// back, and a nil limit holds back nothing.
func TestResendUnlimitedUntilKnown(t *testing.T) {
	r, sent, _ := limitedRing(t, 40, 0, 0)
	var s resendScratch
	for range 3 {
		for seq := range uint16(40) {
			r.resend(seq, &s)
		}
	}
	if len(sent.pkts) != 120 {
		t.Fatalf("%d resent, want 120", len(sent.pkts))
	}
	var l *resendLimit
	l.update(time.Second, 1)
	if !l.take(1<<20) || l.gap() != 0 {
		t.Fatal("a nil limit held a resend back")
	}
}

// Many packets resent at once (a loss burst) are all remembered up to
// resendMarks; the rate limit still holds beyond.
func TestResendMarksRecycle(t *testing.T) {
	r, sent, _ := limitedRing(t, 2*resendMarks, time.Second, 0)
	var s resendScratch
	for seq := range uint16(resendMarks) {
		r.resend(seq, &s)
	}
	for seq := range uint16(resendMarks) {
		r.resend(seq, &s)
	}
	if len(sent.pkts) != resendMarks {
		t.Fatalf("%d resends of %d packets NACKed twice, want %d", len(sent.pkts), resendMarks, resendMarks)
	}
}
