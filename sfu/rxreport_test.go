package sfu

import (
	"math"
	"math/rand"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// rxTrack is an upTrack with no subscribers, fed packets as forward gets
// them from either path.
func rxTrack(clockRate uint64) *upTrack {
	u := &upTrack{kind: webrtc.RTPCodecTypeAudio, kf: newKeyframeThrottle(time.Hour, func() {}), epoch: time.Now()}
	u.rx.clockRate = clockRate
	return u
}

func rxPacket(seq uint16, ts uint32) []byte {
	b, _ := (&rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: seq, Timestamp: ts, SSRC: 5},
		Payload: []byte{1, 2, 3}}).Marshal()
	return b
}

// feed forwards seqs; rtx marks them as retransmissions (repairs).
func (u *upTrack) feed(rtx bool, seqs ...uint16) {
	u.viaRTX = rtx
	for _, s := range seqs {
		u.forward(rxPacket(s, uint32(s)*960))
	}
	u.viaRTX = false
}

func seqRange(from, to uint16) []uint16 { // from..to inclusive, wrapping
	var out []uint16
	for s := from; ; s++ {
		out = append(out, s)
		if s == to {
			return out
		}
	}
}

func checkBlock(t *testing.T, step string, u *upTrack, now time.Time, fraction uint8, total, ext uint32) {
	t.Helper()
	b, ok := u.rx.block(77, now)
	if !ok {
		t.Fatalf("%s: no block", step)
	}
	if b.SSRC != 77 || b.FractionLost != fraction || b.TotalLost != total || b.LastSequenceNumber != ext {
		t.Errorf("%s: block ssrc %d fraction %d total %d ext %#x, want 77, %d, %d, %#x",
			step, b.SSRC, b.FractionLost, b.TotalLost, b.LastSequenceNumber, fraction, total, ext)
	}
}

// TestReceiverReportLoss follows RFC 3550 A.3 through gaps, reordering,
// repairs, duplicates and intervals without loss.
func TestReceiverReportLoss(t *testing.T) {
	u := rxTrack(48000)
	now := time.Now()
	if _, ok := u.rx.block(77, now); ok {
		t.Fatal("a block before any packet")
	}
	// 1000..1009 with 1003 and 1005 missing: 2 of 10 lost.
	u.feed(false, 1000, 1001, 1002, 1004, 1006, 1007, 1008, 1009)
	checkBlock(t, "gaps", u, now, 2*256/10, 2, 1009)
	// A repair over RTX is not a packet received on the media SSRC: the
	// loss on the wire stays. Nothing new was expected: fraction 0.
	u.feed(true, 1003)
	checkBlock(t, "repair", u, now, 0, 2, 1009)
	// 1010..1019, and 1005 arrives late (reordered): 11 received for 10
	// expected in the interval, one lost overall.
	u.feed(false, seqRange(1010, 1019)...)
	u.feed(false, 1005)
	checkBlock(t, "late", u, now, 0, 1, 1019)
	// 20 more with 4 lost: 4*256/20.
	u.feed(false, seqRange(1020, 1035)...)
	u.feed(false, 1040, 1041, 1042, 1043) // 1036..1039 lost
	checkBlock(t, "second loss", u, now, 4*256/24, 5, 1043)
	// A duplicate counts as received (RFC 3550 6.4.1): cumulative loss
	// can drop; a later repair does not.
	u.feed(false, 1043)
	u.feed(true, 1036)
	checkBlock(t, "duplicate", u, now, 0, 4, 1043)
	// The SFU's own numbers count repairs: 41 forwarded, and only
	// 1037..1039 never arrived.
	if u.stats.duplicates.Load() != 1 || u.stats.packets.Load() != 41 {
		t.Errorf("forward: %d duplicates, %d packets, want 1 and 41", u.stats.duplicates.Load(), u.stats.packets.Load())
	}
	if got := u.snapshot().Lost; got != 3 {
		t.Errorf("stats: %d lost, want 3 (never arrived even after repair)", got)
	}
}

// TestReceiverReportSequenceWrap: the extended highest sequence number
// counts cycles (RFC 3550 A.1), and loss across the wrap is counted.
func TestReceiverReportSequenceWrap(t *testing.T) {
	u := rxTrack(90000)
	now := time.Now()
	u.feed(false, seqRange(65530, 65535)...)
	u.feed(false, 1, 2, 3) // 0 lost
	checkBlock(t, "first wrap", u, now, 256/10, 1, 1<<16|3)
	u.feed(false, seqRange(4, 65535)...)
	u.feed(false, seqRange(0, 10)...)
	checkBlock(t, "second wrap", u, now, 0, 1, 2<<16|10)
	if _, exp, _ := u.rx.seqState(); exp != 6+4+65532+11 {
		t.Errorf("expected %d, want %d", exp, 6+4+65532+11)
	}
}

// TestReceiverReportJitter compares the jitter with RFC 3550's estimator
// (6.4.1: J += (|D(i-1,i)| - J)/16, D in timestamp units) computed in
// floating point over random arrival delays and reordering-free packets
// whose timestamps advance like 30 fps video.
func TestReceiverReportJitter(t *testing.T) {
	const clock = 90000
	var s rxStats
	s.clockRate = clock
	rng := rand.New(rand.NewSource(1))
	var j, prevTransit float64
	base := 3 * time.Hour // arrival times are since any epoch
	for i := range 2000 {
		ts := uint32(4294000000 + i*3000) // wraps after a few hundred
		sent := time.Duration(i) * time.Second / 30
		delay := time.Duration(rng.Intn(int(40 * time.Millisecond)))
		at := base + sent + delay
		s.onArrival(ts, at)
		transit := at.Seconds()*clock - float64(i*3000) // ts without the wrap
		if i > 0 {
			j += (math.Abs(transit-prevTransit) - j) / 16
		}
		prevTransit = transit
		if got := float64(s.jitter.Load()); i > 20 && math.Abs(got-j) > 0.05*j+2 {
			t.Fatalf("packet %d: jitter %v, RFC 3550's %.1f", i, got, j)
		}
	}
	t.Logf("jitter after 2000 packets: %d units (RFC 3550 float: %.1f); mean delay spread 20 ms", s.jitter.Load(), j)
	// Packets on time, none late: jitter decays towards 0.
	for i := 2000; i < 2200; i++ {
		s.onArrival(uint32(4294000000+i*3000), base+time.Duration(i)*time.Second/30)
	}
	if got := s.jitter.Load(); got > 1 {
		t.Errorf("jitter %d after 200 punctual packets, want ~0", got)
	}
	// A timestamp jump (a new source run) is not jitter.
	s.onArrival(12345, base+2200*time.Second/30)
	if got := s.jitter.Load(); got > 1 {
		t.Errorf("jitter %d after a timestamp jump, want ~0", got)
	}
}

// TestReceiverReportSenderReport: LSR is the middle of the last SR's NTP
// time and DLSR the time since it arrived, in 1/65536 s.
func TestReceiverReportSenderReport(t *testing.T) {
	u := rxTrack(90000)
	t0 := time.Unix(1000, 0)
	u.feed(false, 1, 2, 3)
	if b, _ := u.rx.block(1, t0); b.LastSenderReport != 0 || b.Delay != 0 {
		t.Errorf("before any SR: LSR %#x DLSR %d, want 0 0", b.LastSenderReport, b.Delay)
	}
	u.rx.onSenderReport(0x0123456789abcdef, t0)
	b, _ := u.rx.block(1, t0.Add(1500*time.Millisecond))
	if b.LastSenderReport != 0x456789ab || b.Delay != 98304 {
		t.Errorf("LSR %#x DLSR %d, want 0x456789ab 98304 (1.5 s)", b.LastSenderReport, b.Delay)
	}
	u.rx.onSenderReport(0x0000000100020000, t0.Add(2*time.Second))
	b, _ = u.rx.block(1, t0.Add(2*time.Second+time.Millisecond))
	if b.LastSenderReport != 0x00010002 || b.Delay != 65 {
		t.Errorf("LSR %#x DLSR %d, want 0x10002 65 (1 ms)", b.LastSenderReport, b.Delay)
	}
}

// TestSenderReportsParse reads the SRs out of a compound packet as a
// publisher sends them, and stops at a malformed length.
func TestSenderReportsParse(t *testing.T) {
	b, err := rtcp.Marshal([]rtcp.Packet{
		&rtcp.ReceiverReport{SSRC: 9, Reports: []rtcp.ReceptionReport{{SSRC: 1}}},
		&rtcp.SenderReport{SSRC: 42, NTPTime: 0x1122334455667788, RTPTime: 99, Reports: []rtcp.ReceptionReport{{SSRC: 3}}},
		&rtcp.SourceDescription{Chunks: []rtcp.SourceDescriptionChunk{{Source: 42, Items: []rtcp.SourceDescriptionItem{{Type: rtcp.SDESCNAME, Text: "x"}}}}},
		&rtcp.SenderReport{SSRC: 43, NTPTime: 7, RTPTime: 8},
	})
	if err != nil {
		t.Fatal(err)
	}
	type sr struct {
		ssrc uint32
		ntp  uint64
		rtp  uint32
	}
	var got []sr
	senderReports(b, func(s uint32, n uint64, r uint32) { got = append(got, sr{s, n, r}) })
	if len(got) != 2 || got[0] != (sr{42, 0x1122334455667788, 99}) || got[1] != (sr{43, 7, 8}) {
		t.Errorf("sender reports %+v", got)
	}
	got = nil
	bad := append([]byte(nil), b...)
	bad[3] = 200 // the first packet claims more than there is
	senderReports(bad, func(s uint32, n uint64, r uint32) { got = append(got, sr{s, n, r}) })
	senderReports(b[:30], func(s uint32, n uint64, r uint32) { got = append(got, sr{s, n, r}) })
	if len(got) != 0 {
		t.Errorf("sender reports from malformed packets: %+v", got)
	}
}

func TestReceiverReportsSplit(t *testing.T) {
	blocks := make([]rtcp.ReceptionReport, 40)
	pkts := receiverReports(5, blocks)
	if len(pkts) != 2 {
		t.Fatalf("%d packets for 40 blocks, want 2", len(pkts))
	}
	for i, want := range []int{31, 9} {
		rr := pkts[i].(*rtcp.ReceiverReport)
		if rr.SSRC != 5 || len(rr.Reports) != want {
			t.Errorf("packet %d: ssrc %d, %d blocks, want 5, %d", i, rr.SSRC, len(rr.Reports), want)
		}
		if _, err := rr.Marshal(); err != nil {
			t.Error(err)
		}
	}
}

// TestForwardCountsWithoutAllocating: the report counting adds no
// allocation to forward.
func TestForwardCountsWithoutAllocating(t *testing.T) {
	u := rxTrack(48000)
	pkt := rxPacket(0, 0)
	seq := uint16(0)
	allocs := testing.AllocsPerRun(1000, func() {
		seq++
		pkt[2], pkt[3] = byte(seq>>8), byte(seq)
		u.forward(pkt)
	})
	if allocs != 0 {
		t.Errorf("forward allocates %v per packet", allocs)
	}
}
