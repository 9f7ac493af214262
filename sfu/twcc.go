package sfu

import (
	"encoding/binary"
	"time"

	"github.com/pion/rtcp"

	"videochat/internal/gcc"
)

// sendHistory remembers, per transport-wide sequence number, when a packet
// left and how big it was, and learns from the receiver's transport-cc
// feedback when it arrived. The prober reads it to measure what a probe
// cluster delivered. Times are durations on the sender's monotonic clock
// (sent) and on the receiver's clock (arrived); only differences within
// each clock are meaningful. It is also congestion control's history: a
// feedback's acknowledgments for GCC are unpacked from it (feedbackAcks),
// so a packet sent is recorded once. Not safe for concurrent use.
type sendHistory struct {
	ring [historySize]sentPacket
}

// historySize is a power of two: 3+ s of video and audio at 2.5 Mbit/s,
// 1.6 s at the estimator's 6 Mbit/s ceiling, against feedback every
// ~100 ms and probe clusters of tens of milliseconds. At 32 bytes a packet
// it costs 32 KiB per PeerConnection (2,048 packets cost 64 KiB, 4,096 of
// 40 bytes 160 KiB).
const historySize = 1024

type sentPacket struct {
	sent    time.Duration // sender clock
	arrived time.Duration // receiver clock; valid when acked
	size    int32         // bytes on the wire (header + payload + padding)
	seq     uint16
	cluster uint16 // probe cluster id, 0 when not probing
	padding uint8  // of size, RTP padding (GCC counts the rest)
	valid   bool
	acked   bool
	lost    bool // reported as not received
}

func (h *sendHistory) slot(seq uint16) *sentPacket { return &h.ring[seq&(historySize-1)] }

// onSent records a packet sent with transport-wide sequence number seq:
// size bytes on the wire, padding of them RTP padding.
func (h *sendHistory) onSent(seq uint16, size int, padding uint8, at time.Duration, cluster uint16) {
	*h.slot(seq) = sentPacket{seq: seq, valid: true, cluster: cluster, size: int32(min(size, 1<<20)), padding: padding, sent: at} //nolint:gosec // clamped
}

// onFeedback applies one transport-cc feedback packet.
func (h *sendHistory) onFeedback(fb *rtcp.TransportLayerCC) {
	h.feedbackAcks(fb, nil, time.Time{})
}

// feedbackAcks applies one transport-cc feedback packet and appends to *acks
// (acks non-nil) GCC's acknowledgment of each status it reports, as
// gcc.FeedbackAdapter unpacks them from its own history: departure times
// are base (the sender clock's zero) plus the time sent, arrival times
// time.Time{} plus the receiver's clock, and a packet not received, or
// not in the history, has a zero arrival (a zero acknowledgment when not
// in the history). ok is false for a malformed feedback (more received
// statuses than arrival deltas): what it reported before that is applied,
// but GCC is not to see it (the adapter rejected such feedback whole).
func (h *sendHistory) feedbackAcks(fb *rtcp.TransportLayerCC, acks *[]gcc.Acknowledgment, base time.Time) (ok bool) {
	seq := fb.BaseSequenceNumber
	// Statuses past the history's length could only be matched against
	// packets it no longer holds: a hostile count (up to 65,535) must not
	// build megabytes of acknowledgments under the estimator's lock.
	remaining := min(int(fb.PacketStatusCount), historySize)
	arrival := time.Duration(fb.ReferenceTime) * 64 * time.Millisecond
	deltas := fb.RecvDeltas
	malformed := false
	status := func(symbol uint16) bool {
		if remaining <= 0 {
			return false
		}
		remaining--
		p := h.slot(seq)
		mine := p.valid && p.seq == seq
		var ack gcc.Acknowledgment
		if mine {
			ack = gcc.Acknowledgment{SequenceNumber: seq, Size: int(p.size) - int(p.padding), Departure: base.Add(p.sent)}
		}
		switch symbol {
		case rtcp.TypeTCCPacketReceivedSmallDelta, rtcp.TypeTCCPacketReceivedLargeDelta:
			if len(deltas) == 0 {
				malformed = true
				return false // stop
			}
			arrival += time.Duration(deltas[0].Delta) * time.Microsecond
			deltas = deltas[1:]
			if mine {
				p.arrived, p.acked, p.lost = arrival, true, false
				ack.Arrival = time.Time{}.Add(arrival)
			}
		case rtcp.TypeTCCPacketNotReceived:
			if mine && !p.acked {
				p.lost = true
			}
		}
		if acks != nil {
			*acks = append(*acks, ack)
		}
		seq++
		return true
	}
	for _, chunk := range fb.PacketChunks {
		switch c := chunk.(type) {
		case *rtcp.RunLengthChunk:
			for i := uint16(0); i < c.RunLength; i++ {
				if !status(c.PacketStatusSymbol) {
					return !malformed
				}
			}
		case *rtcp.StatusVectorChunk:
			for _, s := range c.SymbolList {
				if c.SymbolSize == rtcp.TypeTCCSymbolSizeOneBit && s != rtcp.TypeTCCPacketNotReceived {
					s = rtcp.TypeTCCPacketReceivedSmallDelta
				}
				if !status(s) {
					return !malformed
				}
			}
		}
	}
	return true
}

// transportSeq reads the transport-wide sequence number from a raw
// header extension value.
func transportSeq(ext []byte) (uint16, bool) {
	if len(ext) < 2 {
		return 0, false
	}
	return binary.BigEndian.Uint16(ext), true
}

// clusterResult is what the receiver saw of one probe cluster.
type clusterResult struct {
	sent, received, lost int     // packets
	sendRate, recvRate   float64 // bit/s; 0 when too few packets to tell
}

// minClusterPackets is the fewest acknowledged packets a rate is computed from.
const minClusterPackets = 5

// measure computes the send and receive rates of the packets of cluster id
// among the sequence numbers [first, last]. As in libwebrtc's probe
// estimator, the last packet to arrive does not count towards the receive
// rate and the first one sent not towards the send rate (each rate is
// bytes over the span between the first and last event).
func (h *sendHistory) measure(id uint16, first, last uint16) clusterResult {
	var r clusterResult
	var sendBytes, recvBytes int
	var firstSent, lastSent, firstArr, lastArr time.Duration
	var firstSentSize, lastArrSize int
	for seq := first; ; seq++ {
		p := h.slot(seq)
		if p.valid && p.seq == seq && p.cluster == id {
			if r.sent == 0 || p.sent < firstSent {
				firstSent, firstSentSize = p.sent, int(p.size)
			}
			if r.sent == 0 || p.sent > lastSent {
				lastSent = p.sent
			}
			r.sent++
			sendBytes += int(p.size)
			switch {
			case p.acked:
				if r.received == 0 || p.arrived < firstArr {
					firstArr = p.arrived
				}
				if r.received == 0 || p.arrived >= lastArr {
					lastArr, lastArrSize = p.arrived, int(p.size)
				}
				r.received++
				recvBytes += int(p.size)
			case p.lost:
				r.lost++
			}
		}
		if seq == last {
			break
		}
	}
	if r.sent >= minClusterPackets && lastSent > firstSent {
		r.sendRate = float64(sendBytes-firstSentSize) * 8 / (lastSent - firstSent).Seconds()
	}
	if r.received >= minClusterPackets && lastArr > firstArr {
		r.recvRate = float64(recvBytes-lastArrSize) * 8 / (lastArr - firstArr).Seconds()
	}
	return r
}
