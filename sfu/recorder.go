package sfu

import (
	"errors"
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
//
// The writer runs on a goroutine of its own (work), so that a writer
// blocked for good (a hung disk) costs only its recording: run, which the
// participant's teardown waits for, returns at most stopBound after stop
// even if the writer never returns; the abandoned worker ends whenever
// the writer does.
type recordQueue struct {
	w       TrackWriter
	items   chan recordItem
	free    chan []byte
	dropped atomic.Uint64
	failed  atomic.Bool
	done    chan struct{}
	once    sync.Once
	// drainFor bounds how long queued packets are still delivered after
	// the track ended, so a slow writer cannot hold up a call's end.
	drainFor time.Duration
	// stopBound bounds how long run waits for the writer after stop
	// (draining and Close included) before abandoning it.
	stopBound time.Duration
	// abandoned is closed when run gave up on a stuck writer.
	abandoned chan struct{}
}

type recordItem struct {
	pkt     []byte // nil for a sender report
	ntp     uint64
	rtpTime uint32
}

const (
	recordQueueLen = 512
	// recordDrainFor and recordStopBound: after a track ends, queued
	// packets are delivered for up to 1 s; the writer gets 2 s in all
	// (drain and Close) before the participant's teardown goes on without it.
	recordDrainFor  = time.Second
	recordStopBound = 2 * time.Second
)

// errWriterStuck is returned by run when the writer did not finish in time.
var errWriterStuck = errors.New("recording writer did not finish in time (stuck disk?); abandoned")

func newRecordQueue(w TrackWriter) *recordQueue {
	q := &recordQueue{w: w, items: make(chan recordItem, recordQueueLen),
		free: make(chan []byte, recordQueueLen), done: make(chan struct{}),
		drainFor: recordDrainFor, stopBound: recordStopBound, abandoned: make(chan struct{})}
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

// run delivers the queue to the writer until stop, then closes the
// writer; it returns the first writer error (a writer error stops that
// recording only). It returns at most stopBound after stop, even if the
// writer is blocked forever.
func (q *recordQueue) run() error {
	result := make(chan error, 1)
	go func() { result <- q.work() }()
	select {
	case err := <-result:
		return err
	case <-q.done:
	}
	t := time.NewTimer(q.stopBound)
	defer t.Stop()
	select {
	case err := <-result:
		return err
	case <-t.C:
		q.failed.Store(true) // push drops from now on
		close(q.abandoned)
		q.dropped.Add(uint64(len(q.items)))
		return errWriterStuck
	}
}

// work is the writer's goroutine: it delivers items until stop, drains
// for up to drainFor, and closes the writer.
func (q *recordQueue) work() error {
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
			for time.Now().Before(deadline) && !q.isAbandoned() {
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
			if !q.isAbandoned() { // run counted them already
				q.dropped.Add(uint64(len(q.items)))
			}
			return err
		}
	}
}

func (q *recordQueue) isAbandoned() bool {
	select {
	case <-q.abandoned:
		return true
	default:
		return false
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
