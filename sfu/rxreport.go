package sfu

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
)

// RTCP receiver reports (RFC 3550 6.4.2) for the media the SFU receives
// from publishers. pion's report.ReceiverInterceptor counted packets in
// the interceptor chain of each remote stream; a packet handed to
// upTrack.forward by a path that skips pion's readers (the receive fast
// path) would not be counted there, so the counting happens in forward,
// which sees every packet on every path, and one goroutine per participant
// sends the reports.
//
// Like pion's interceptor: one report per interval (1 s), loss over the
// interval and cumulative, the extended highest sequence number, RFC 3550
// interarrival jitter and LSR/DLSR from the publisher's last sender report.
// Unlike it: one RR per participant carries a block for each of its
// tracks (pion sent one RR per stream, each from a random SSRC of its
// own), and the RTX streams get no block. pion reported on them because its
// interceptor sees the RTX stream before pion drops the padding-only
// bandwidth probes, which forward never sees: counted from forward, every
// probe would be reported lost. Senders need the media blocks only (round
// trip, loss); libwebrtc keeps its RTX statistics without them.
//
// Media loss is loss on the wire, as RFC 3550, pion and libwebrtc count
// it: a packet repaired over RTX is not received on the media SSRC, so
// it does not reduce the reported loss.

// rrInterval is how often a participant's receiver report goes out (pion's
// ReceiverInterceptor default).
const rrInterval = time.Second

// rrMaxBlocks is the most report blocks one RR holds (a 5-bit count).
const rrMaxBlocks = 31

// rxSeqMask keeps the extended highest sequence number in rxStats.seqs.
const rxSeqMask = 1<<47 - 1

// rxStats are the reception statistics of one upTrack. onArrival and
// onAccepted run in forward (one goroutine at a time); block runs on the
// participant's report goroutine; onSenderReport on the track's RTCP reader.
type rxStats struct {
	// Owned by forward.
	clockRate   uint64 // RTP timestamp units per second; 0: no jitter
	jitterOn    bool   // lastTransit is set
	lastTransit uint32 // RTP units (RFC 3550 A.8)
	jitter16    uint64 // interarrival jitter × 16
	jitterPub   uint32 // the value last stored in jitter

	// Published by forward, read by block.
	received atomic.Uint64 // packets that arrived on the media SSRC (duplicates and late ones too, RFC 3550 6.4.1)
	// seqs is 1<<63 | first sequence number<<47 | extended highest
	// sequence number (dupFilter's, which has the cycles); 0 before the
	// first packet. One word, so the two are read together.
	seqs   atomic.Uint64
	jitter atomic.Uint32 // jitter16 >> 4, RTP units

	// Owned by the report goroutine: the totals at the last report.
	priorExpected, priorReceived uint64

	// The publisher's last sender report.
	srMu sync.Mutex
	lsr  uint32    // middle 32 bits of its NTP timestamp
	srAt time.Time // when it arrived; zero: none yet
}

// onArrival notes a packet that came on the media SSRC (not a
// retransmission) with RTP timestamp ts at arrival, which is time since
// any fixed epoch. Jitter per RFC 3550 A.8; like libwebrtc, a transit
// difference of 5 s or more (a timestamp jump: a new source run) is left
// out rather than poisoning the estimate for hundreds of packets.
func (s *rxStats) onArrival(ts uint32, arrival time.Duration) {
	if s.clockRate != 0 {
		ns := uint64(arrival)
		units := uint32(ns/1e9*s.clockRate + ns%1e9*s.clockRate/1e9)
		transit := units - ts
		if s.jitterOn {
			d := int64(int32(transit - s.lastTransit))
			if d < 0 {
				d = -d
			}
			if uint64(d) < 5*s.clockRate {
				s.jitter16 += uint64(d) - (s.jitter16+8)>>4
				if j := uint32(min(s.jitter16>>4, 1<<32-1)); j != s.jitterPub {
					s.jitterPub = j // most packets leave it as it was: no store
					s.jitter.Store(j)
				}
			}
		}
		s.jitterOn, s.lastTransit = true, transit
	}
}

// onReceived counts a packet that came on the media SSRC. forward calls it
// after onAccepted, and block loads received before seqs, so a packet
// counted here is always covered by the sequence numbers block reads.
func (s *rxStats) onReceived() { s.received.Add(1) }

// onAccepted publishes the duplicate filter's state after it took a
// packet (media or repair).
func (s *rxStats) onAccepted(d *dupFilter) {
	ext := (d.cycles<<16 + uint64(d.highest)) & rxSeqMask
	s.seqs.Store(1<<63 | uint64(d.first)<<47 | ext)
}

// expected is how many sequence numbers the stream has covered (RFC 3550
// A.3: extended highest minus first, plus one); 0 before the first packet.
func (s *rxStats) expected() uint64 {
	_, exp, _ := s.seqState()
	return exp
}

func (s *rxStats) seqState() (ext, expected uint64, ok bool) {
	v := s.seqs.Load()
	if v == 0 {
		return 0, 0, false
	}
	ext = v & rxSeqMask
	return ext, ext - (v>>47)&0xffff + 1, true
}

// onSenderReport notes the publisher's sender report with NTP time ntp,
// arrived at now.
func (s *rxStats) onSenderReport(ntp uint64, now time.Time) {
	s.srMu.Lock()
	s.lsr, s.srAt = uint32(ntp>>16), now
	s.srMu.Unlock()
}

// block is the report block for ssrc at now, and starts the next interval;
// false before the first packet.
func (s *rxStats) block(ssrc uint32, now time.Time) (rtcp.ReceptionReport, bool) {
	received := s.received.Load() // before seqs: see onReceived
	ext, expected, ok := s.seqState()
	if !ok {
		return rtcp.ReceptionReport{}, false
	}
	b := rtcp.ReceptionReport{SSRC: ssrc, LastSequenceNumber: uint32(ext), Jitter: s.jitter.Load()}
	expIv, recIv := expected-s.priorExpected, received-s.priorReceived
	s.priorExpected, s.priorReceived = expected, received
	if expIv > 0 && recIv < expIv {
		b.FractionLost = uint8((expIv - recIv) << 8 / expIv)
	}
	if expected > received {
		b.TotalLost = uint32(min(expected-received, 0x7fffff)) // a 24-bit signed field
	}
	s.srMu.Lock()
	if !s.srAt.IsZero() {
		b.LastSenderReport = s.lsr
		d := min(max(now.Sub(s.srAt), 0), 65535*time.Second) // a 16.16 fixed-point field
		b.Delay = uint32(d * 65536 / time.Second)
	}
	s.srMu.Unlock()
	return b, true
}

// senderReports calls f with the SSRC, NTP and RTP time of each sender
// report in the compound RTCP packet b, which it reads in place.
func senderReports(b []byte, f func(ssrc uint32, ntp uint64, rtpTime uint32)) {
	for len(b) >= 4 {
		n := 4 * (int(binary.BigEndian.Uint16(b[2:4])) + 1)
		if b[0]>>6 != 2 || n > len(b) {
			return
		}
		if b[1] == uint8(rtcp.TypeSenderReport) && n >= 28 {
			f(binary.BigEndian.Uint32(b[4:8]), binary.BigEndian.Uint64(b[8:16]), binary.BigEndian.Uint32(b[16:20]))
		}
		b = b[n:]
	}
}

// receiverReports builds the RRs for the blocks (at most rrMaxBlocks each).
func receiverReports(ssrc uint32, blocks []rtcp.ReceptionReport) []rtcp.Packet {
	var out []rtcp.Packet
	for len(blocks) > 0 {
		n := min(len(blocks), rrMaxBlocks)
		out = append(out, &rtcp.ReceiverReport{SSRC: ssrc, Reports: blocks[:n:n]})
		blocks = blocks[n:]
	}
	return out
}

// runReports sends p's receiver reports every interval until done is
// closed: one RR with a block for each of its tracks that has received
// anything.
func (p *Participant) runReports(done <-chan struct{}, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	ssrc := rand.Uint32() //nolint:gosec // an identifier, like pion's
	for {
		select {
		case <-done:
			return
		case <-t.C:
		}
		now := time.Now()
		var blocks []rtcp.ReceptionReport
		for _, u := range p.upTracks() {
			if u.ended.Load() || u.track == nil {
				continue
			}
			if b, ok := u.rx.block(uint32(u.track.SSRC()), now); ok {
				blocks = append(blocks, b)
			}
		}
		if len(blocks) > 0 {
			_ = p.pc.WriteRTCP(receiverReports(ssrc, blocks))
		}
	}
}
