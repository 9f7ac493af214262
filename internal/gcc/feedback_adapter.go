// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

package gcc

import (
	"container/list"
	"errors"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// TwccExtensionAttributesKey identifies the TWCC value in the attribute collection
// so we don't need to reparse.
const TwccExtensionAttributesKey = iota

var (
	errMissingTWCCExtension = errors.New("missing transport layer cc header extension")
	errInvalidFeedback      = errors.New("invalid feedback")
)

// FeedbackAdapter converts incoming RTCP Packets (TWCC and RFC8888) into Acknowledgments.
// Acknowledgments are the common format that Congestion Controllers in Pion understand.
type FeedbackAdapter struct {
	lock    sync.Mutex
	history *feedbackHistory
}

// NewFeedbackAdapter returns a new FeedbackAdapter.
func NewFeedbackAdapter() *FeedbackAdapter {
	return &FeedbackAdapter{history: newFeedbackHistory(feedbackHistorySize)}
}

func (f *FeedbackAdapter) onSentRFC8888(ts time.Time, header *rtp.Header, size int) error {
	f.lock.Lock()
	defer f.lock.Unlock()

	f.history.add(Acknowledgment{
		SequenceNumber: header.SequenceNumber,
		SSRC:           header.SSRC,
		Size:           size,
		Departure:      ts,
		Arrival:        time.Time{},
		ECN:            0,
	})

	return nil
}

func (f *FeedbackAdapter) onSentTWCC(ts time.Time, extID uint8, header *rtp.Header, size int) error {
	sequenceNumber := header.GetExtension(extID)
	var tccExt rtp.TransportCCExtension
	err := tccExt.Unmarshal(sequenceNumber)
	if err != nil {
		return errMissingTWCCExtension
	}

	f.lock.Lock()
	defer f.lock.Unlock()
	f.history.add(Acknowledgment{
		SequenceNumber: tccExt.TransportSequence,
		SSRC:           0,
		Size:           header.MarshalSize() + size,
		Departure:      ts,
		Arrival:        time.Time{},
		ECN:            0,
	})

	return nil
}

// OnSent records that and when an outgoing packet was sent for later mapping to
// acknowledgments.
func (f *FeedbackAdapter) OnSent(ts time.Time, header *rtp.Header, size int, attributes interceptor.Attributes) error {
	hdrExtensionID := attributes.Get(TwccExtensionAttributesKey)
	id, ok := hdrExtensionID.(uint8)
	if ok && hdrExtensionID != 0 {
		return f.onSentTWCC(ts, id, header, size)
	}

	return f.onSentRFC8888(ts, header, size)
}

// unpackRunLengthChunk appends the chunk's acknowledgments to out (one per
// status, zero for packets not in the history) and returns the extended
// slice: one slice per feedback instead of one per chunk plus copies.
func (f *FeedbackAdapter) unpackRunLengthChunk(
	out []Acknowledgment, start uint16, refTime time.Time, chunk *rtcp.RunLengthChunk, deltas []*rtcp.RecvDelta,
) (consumedDeltas int, nextRef time.Time, acks []Acknowledgment, err error) {
	base := len(out)
	out = append(out, make([]Acknowledgment, chunk.RunLength)...)
	result := out[base:]
	deltaIndex := 0

	end := start + chunk.RunLength
	resultIndex := 0
	for i := start; i != end; i++ {
		key := feedbackHistoryKey{
			ssrc:           0,
			sequenceNumber: i,
		}
		if ack, ok := f.history.get(key); ok {
			if chunk.PacketStatusSymbol != rtcp.TypeTCCPacketNotReceived {
				if len(deltas)-1 < deltaIndex {
					return deltaIndex, refTime, out, errInvalidFeedback
				}
				refTime = refTime.Add(time.Duration(deltas[deltaIndex].Delta) * time.Microsecond)
				ack.Arrival = refTime
				deltaIndex++
			}
			result[resultIndex] = ack
		}
		resultIndex++
	}

	return deltaIndex, refTime, out, nil
}

// unpackStatusVectorChunk appends like unpackRunLengthChunk.
func (f *FeedbackAdapter) unpackStatusVectorChunk(
	out []Acknowledgment, start uint16, refTime time.Time, chunk *rtcp.StatusVectorChunk, deltas []*rtcp.RecvDelta,
) (consumedDeltas int, nextRef time.Time, acks []Acknowledgment, err error) {
	base := len(out)
	out = append(out, make([]Acknowledgment, len(chunk.SymbolList))...)
	result := out[base:]
	deltaIndex := 0
	resultIndex := 0
	for i, symbol := range chunk.SymbolList {
		key := feedbackHistoryKey{
			ssrc:           0,
			sequenceNumber: start + uint16(i), //nolint:gosec // G115
		}
		if ack, ok := f.history.get(key); ok {
			if symbol != rtcp.TypeTCCPacketNotReceived {
				if len(deltas)-1 < deltaIndex {
					return deltaIndex, refTime, out, errInvalidFeedback
				}
				refTime = refTime.Add(time.Duration(deltas[deltaIndex].Delta) * time.Microsecond)
				ack.Arrival = refTime
				deltaIndex++
			}
			result[resultIndex] = ack
		}
		resultIndex++
	}

	return deltaIndex, refTime, out, nil
}

// OnTransportCCFeedback converts incoming TWCC RTCP packet feedback to
// Acknowledgments.
func (f *FeedbackAdapter) OnTransportCCFeedback(
	_ time.Time, feedback *rtcp.TransportLayerCC,
) ([]Acknowledgment, error) {
	return f.onTransportCCFeedback(nil, feedback)
}

// onTransportCCFeedback appends the feedback's acknowledgments to dst[:0]
// (SendSideBWE reuses it from feedback to feedback).
func (f *FeedbackAdapter) onTransportCCFeedback(dst []Acknowledgment, feedback *rtcp.TransportLayerCC) ([]Acknowledgment, error) {
	f.lock.Lock()
	defer f.lock.Unlock()

	// Sized for its statuses (a malformed count only costs a regrowth).
	result := dst[:0]
	if want := min(int(feedback.PacketStatusCount), 1<<12); cap(result) < want {
		result = make([]Acknowledgment, 0, want)
	}
	index := feedback.BaseSequenceNumber
	refTime := time.Time{}.Add(time.Duration(feedback.ReferenceTime) * 64 * time.Millisecond)
	recvDeltas := feedback.RecvDeltas

	for _, chunk := range feedback.PacketChunks {
		before := len(result)
		switch chunk := chunk.(type) {
		case *rtcp.RunLengthChunk:
			n, nextRefTime, acks, err := f.unpackRunLengthChunk(result, index, refTime, chunk, recvDeltas)
			if err != nil {
				return nil, err
			}
			refTime = nextRefTime
			result = acks
			recvDeltas = recvDeltas[n:]
			index = uint16(int(index) + len(result) - before) //nolint:gosec // G115
		case *rtcp.StatusVectorChunk:
			n, nextRefTime, acks, err := f.unpackStatusVectorChunk(result, index, refTime, chunk, recvDeltas)
			if err != nil {
				return nil, err
			}
			refTime = nextRefTime
			result = acks
			recvDeltas = recvDeltas[n:]
			index = uint16(int(index) + len(result) - before) //nolint:gosec // G115
		default:
			return nil, errInvalidFeedback
		}
	}
	// Changed from pion: a status vector chunk always holds 7 or 14
	// symbols, and the last one is padded with "not received" past the
	// feedback's packet status count. Those are not statuses: pion
	// reported them as packets lost (packets sent after the feedback was
	// built were in the history by the time it arrived).
	if n := int(feedback.PacketStatusCount); len(result) > n {
		result = result[:n]
	}

	return result, nil
}

// OnRFC8888Feedback converts incoming Congestion Control Feedback RTCP packet
// to Acknowledgments.
func (f *FeedbackAdapter) OnRFC8888Feedback(_ time.Time, feedback *rtcp.CCFeedbackReport) []Acknowledgment {
	f.lock.Lock()
	defer f.lock.Unlock()

	result := []Acknowledgment{}
	referenceTime := ntpToTime(uint64(feedback.ReportTimestamp) << 16)
	for _, rb := range feedback.ReportBlocks {
		for i, mb := range rb.MetricBlocks {
			sequenceNumber := rb.BeginSequence + uint16(i) //nolint:gosec // G115
			key := feedbackHistoryKey{
				ssrc:           rb.MediaSSRC,
				sequenceNumber: sequenceNumber,
			}
			if ack, ok := f.history.get(key); ok {
				if mb.Received {
					delta := time.Duration((float64(mb.ArrivalTimeOffset) / 1024.0) * float64(time.Second))
					ack.Arrival = referenceTime.Add(-delta)
					ack.ECN = mb.ECN
				}
				result = append(result, ack)
			}
		}
	}

	return result
}

// Changed from pion: packets numbered with a transport-wide sequence
// number (SSRC 0 here) are remembered in a ring indexed by that number,
// without allocating per packet; pion's list and map (one list element
// and one boxed Acknowledgment per packet sent) remain for RFC 8888
// feedback, which is per SSRC and RTP sequence number.
const feedbackHistorySize = 256 // pion keeps 250; a power of two

// The ring (20 KiB) is allocated by the first packet recorded: an
// estimator fed acknowledgments from its user's own history
// (SendSideBWE.WriteAcks) never records any.
type feedbackHistory struct {
	twcc  *[feedbackHistorySize]twccSlot
	other *lruHistory
}

type twccSlot struct {
	ack   Acknowledgment
	valid bool
}

func newFeedbackHistory(size int) *feedbackHistory {
	return &feedbackHistory{other: newLRUHistory(size)}
}

func (f *feedbackHistory) add(ack Acknowledgment) {
	if ack.SSRC != 0 {
		f.other.add(ack)

		return
	}
	if f.twcc == nil {
		f.twcc = new([feedbackHistorySize]twccSlot)
	}
	f.twcc[ack.SequenceNumber%feedbackHistorySize] = twccSlot{ack: ack, valid: true}
}

func (f *feedbackHistory) get(key feedbackHistoryKey) (Acknowledgment, bool) {
	if key.ssrc != 0 {
		return f.other.get(key)
	}
	if f.twcc == nil {
		return Acknowledgment{}, false
	}
	slot := &f.twcc[key.sequenceNumber%feedbackHistorySize]
	if !slot.valid || slot.ack.SequenceNumber != key.sequenceNumber {
		return Acknowledgment{}, false
	}

	return slot.ack, true
}

type feedbackHistoryKey struct {
	ssrc           uint32
	sequenceNumber uint16
}

type lruHistory struct {
	size      int
	evictList *list.List
	items     map[feedbackHistoryKey]*list.Element
}

func newLRUHistory(size int) *lruHistory {
	return &lruHistory{
		size:      size,
		evictList: list.New(),
		items:     make(map[feedbackHistoryKey]*list.Element),
	}
}

func (f *lruHistory) get(key feedbackHistoryKey) (Acknowledgment, bool) {
	ent, ok := f.items[key]
	if ok {
		if ack, ok := ent.Value.(Acknowledgment); ok {
			return ack, true
		}
	}

	return Acknowledgment{}, false
}

func (f *lruHistory) add(ack Acknowledgment) {
	key := feedbackHistoryKey{
		ssrc:           ack.SSRC,
		sequenceNumber: ack.SequenceNumber,
	}
	// Check for existing
	if ent, ok := f.items[key]; ok {
		f.evictList.MoveToFront(ent)
		ent.Value = ack

		return
	}
	// Add new
	ent := f.evictList.PushFront(ack)
	f.items[key] = ent
	// Evict if necessary
	if f.evictList.Len() > f.size {
		f.removeOldest()
	}
}

func (f *lruHistory) removeOldest() {
	if ent := f.evictList.Back(); ent != nil {
		f.evictList.Remove(ent)
		if ack, ok := ent.Value.(Acknowledgment); ok {
			key := feedbackHistoryKey{
				ssrc:           ack.SSRC,
				sequenceNumber: ack.SequenceNumber,
			}
			delete(f.items, key)
		}
	}
}
