package sfu

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"
)

// TrackInfo describes a track a participant started publishing.
type TrackInfo struct {
	CallID      string
	Participant string
	Kind        webrtc.RTPCodecType
	Codec       webrtc.RTPCodecParameters
	SSRC        uint32
	// RequestKeyframe asks the publisher for a keyframe (throttled like
	// every other request); recorders call it after unrecoverable loss.
	RequestKeyframe func()
}

// Recorder sees every published track. StartTrack is called when a track
// starts and returns where a copy of its packets goes, or nil for "don't
// record this". It must not block.
type Recorder interface {
	StartTrack(TrackInfo) TrackWriter
}

// TrackWriter receives one track's packets on a goroutine of its own, in
// arrival order, never on the forwarding path: if it falls behind, packets
// are dropped (and counted) instead of delaying anyone.
type TrackWriter interface {
	// WriteRTP gets one RTP packet (header and payload, padding removed
	// from neither); pkt is reused after WriteRTP returns.
	WriteRTP(pkt []byte) error
	// SenderReport gets each RTCP sender report of the track: the
	// publisher's NTP time (64-bit fixed point) for an RTP timestamp.
	SenderReport(ntpTime uint64, rtpTime uint32)
	// Close is called once when the track ends (or the writer failed).
	Close() error
}

// recordQueue is the bounded hand-off from a track's read loop to its
// TrackWriter. Buffers are recycled through free so that steady-state
// recording allocates nothing per packet.
type recordQueue struct {
	w       TrackWriter
	items   chan recordItem
	free    chan []byte
	dropped atomic.Uint64
	failed  atomic.Bool
	done    chan struct{}
	once    sync.Once
	// drainFor bounds how long queued packets are still delivered after
	// the track ended, so a stuck writer cannot hold up a call's end.
	drainFor time.Duration
}

type recordItem struct {
	pkt     []byte // nil for a sender report
	ntp     uint64
	rtpTime uint32
}

const recordQueueLen = 512

func newRecordQueue(w TrackWriter) *recordQueue {
	q := &recordQueue{w: w, items: make(chan recordItem, recordQueueLen),
		free: make(chan []byte, recordQueueLen), done: make(chan struct{}), drainFor: 3 * time.Second}
	return q
}

// push copies pkt into the queue without blocking; a full queue drops it.
func (q *recordQueue) push(pkt []byte) {
	if q.failed.Load() {
		return
	}
	var b []byte
	select {
	case b = <-q.free:
	default:
		b = make([]byte, 0, maxPacket)
	}
	b = append(b[:0], pkt...)
	select {
	case q.items <- recordItem{pkt: b}:
	default:
		q.dropped.Add(1)
	}
}

func (q *recordQueue) pushReport(ntp uint64, rtpTime uint32) {
	select {
	case q.items <- recordItem{ntp: ntp, rtpTime: rtpTime}:
	default:
	}
}

// run drains the queue into the writer until stop; then closes the writer.
// A writer error stops that recording only.
func (q *recordQueue) run() error {
	var err error
	defer func() {
		if cerr := q.w.Close(); err == nil {
			err = cerr
		}
	}()
	for {
		select {
		case it := <-q.items:
			if e := q.deliver(it); e != nil && err == nil {
				err = e
				q.failed.Store(true)
			}
		case <-q.done:
			deadline := time.Now().Add(q.drainFor)
			for time.Now().Before(deadline) {
				select {
				case it := <-q.items:
					if e := q.deliver(it); e != nil && err == nil {
						err = e
						q.failed.Store(true)
					}
				default:
					return err
				}
			}
			q.dropped.Add(uint64(len(q.items)))
			return err
		}
	}
}

func (q *recordQueue) deliver(it recordItem) error {
	if q.failed.Load() {
		return nil
	}
	if it.pkt == nil {
		q.w.SenderReport(it.ntp, it.rtpTime)
		return nil
	}
	err := q.w.WriteRTP(it.pkt)
	select {
	case q.free <- it.pkt:
	default:
	}
	return err
}

func (q *recordQueue) stop() { q.once.Do(func() { close(q.done) }) }
