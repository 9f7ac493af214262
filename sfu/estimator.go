package sfu

import (
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"

	"videochat/internal/gcc"
)

// transportCCURI names the transport-wide sequence number extension.
const transportCCURI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

// probingEstimator is one subscriber's downlink estimator: pion's GCC
// (delay and loss based, used without pacing) plus bandwidth probes. It
// implements cc.BandwidthEstimator, so pion's cc interceptor feeds it every
// packet sent and every RTCP packet received. When a probe shows the link
// carries more than GCC estimates, GCC is restarted at the probed rate
// (libwebrtc likewise sets its delay-based estimate from probe results).
//
// Packets sent are recorded once, in hist: GCC's writers are not in the
// write path, and GCC is given each feedback's acknowledgments unpacked
// from hist (gcc.SendSideBWE.WriteAcks), so a restarted GCC also knows the
// packets its predecessor sent.
type probingEstimator struct {
	newGCC func(initial int) (*gcc.SendSideBWE, error)
	clock  func() time.Duration // monotonic; injectable
	base   time.Time            // the clock's zero, for GCC's departure times
	acks   sync.Pool            // of *[]gcc.Acknowledgment, one feedback's

	mu     sync.Mutex
	gcc    *gcc.SendSideBWE
	hist   sendHistory
	ctl    probeController
	padder padder       // the subscriber's video track; nil until bound
	lim    *resendLimit // told the round trip and the estimate; may be nil
	closed bool
	stop   chan struct{}
	wg     sync.WaitGroup // the pacer of the cluster being sent
}

// padder sends padding-only packets between frames (downTrack.pad).
type padder interface{ pad(bytes int) int }

func newGCC(initial int) (*gcc.SendSideBWE, error) {
	return gcc.NewSendSideBWE(
		gcc.SendSideBWEInitialBitrate(initial),
		gcc.SendSideBWEMinBitrate(bweMin),
		gcc.SendSideBWEMaxBitrate(bweMax),
		gcc.SendSideBWEPacer(newDirectPacer()),
	)
}

func newProbingEstimator() (*probingEstimator, error) {
	g, err := newGCC(bweInitial)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	return &probingEstimator{
		newGCC: newGCC, clock: func() time.Duration { return time.Since(start) }, base: start,
		gcc: g, stop: make(chan struct{}),
	}, nil
}

// AddStream implements cc.BandwidthEstimator: packets with a transport-wide
// sequence number are recorded on their way down.
func (e *probingEstimator) AddStream(info *interceptor.StreamInfo, writer interceptor.RTPWriter) interceptor.RTPWriter {
	var extID uint8
	for _, x := range info.RTPHeaderExtensions {
		if x.URI == transportCCURI {
			extID = uint8(x.ID) //nolint:gosec // extension ids are 1..255
		}
	}
	if extID == 0 {
		return writer
	}
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if seq, ok := transportSeq(h.GetExtension(extID)); ok {
			e.onSent(seq, h.MarshalSize()+len(payload)+int(h.PaddingSize), h.PaddingSize)
		}
		return writer.Write(h, payload, a)
	})
}

func (e *probingEstimator) onSent(seq uint16, size int, padding uint8) {
	e.mu.Lock()
	now := e.clock()
	id := e.ctl.activeCluster(now)
	e.hist.onSent(seq, size, padding, now, id)
	if id != 0 {
		e.ctl.onSent(seq, size)
	}
	e.mu.Unlock()
}

// WriteRTCP implements cc.BandwidthEstimator. It never fails: an error
// here would end pion's RTCP reading for the whole PeerConnection.
func (e *probingEstimator) WriteRTCP(pkts []rtcp.Packet, _ interceptor.Attributes) error {
	buf, _ := e.acks.Get().(*[]gcc.Acknowledgment)
	if buf == nil {
		buf = new([]gcc.Acknowledgment)
	}
	defer e.acks.Put(buf)
	feedback := false
	for _, p := range pkts {
		fb, ok := p.(*rtcp.TransportLayerCC)
		if !ok {
			continue
		}
		feedback = true
		*buf = (*buf)[:0]
		e.mu.Lock()
		ok = e.hist.feedbackAcks(fb, buf, e.base)
		g := e.gcc
		e.mu.Unlock()
		if ok {
			_ = g.WriteAcks(e.base.Add(e.clock()), *buf)
		}
	}
	if feedback {
		e.afterFeedback()
	}
	return nil
}

// afterFeedback evaluates probes and starts new ones.
func (e *probingEstimator) afterFeedback() {
	target := e.GetTargetBitrate()
	e.mu.Lock()
	e.lim.update(e.gcc.RTT(), target)
	if e.closed {
		e.mu.Unlock()
		return
	}
	raise, started := e.ctl.poll(e.clock(), target, e.padder != nil, &e.hist)
	if started {
		e.wg.Add(1)
		go func() { defer e.wg.Done(); e.pace() }()
	}
	e.mu.Unlock()
	if raise > 0 {
		e.restartGCC(raise)
	}
}

// pace sends the running cluster's padding, a little every few
// milliseconds, until the cluster's time is up.
func (e *probingEstimator) pace() {
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-e.stop:
			return
		case <-tick.C:
		}
		e.mu.Lock()
		now := e.clock()
		sending, need, p := e.ctl.sending(now), e.ctl.deficit(now), e.padder
		e.mu.Unlock()
		if !sending {
			return
		}
		if need > 0 && p != nil {
			p.pad(need)
		}
	}
}

// restartGCC replaces GCC with one that starts at rate.
func (e *probingEstimator) restartGCC(rate int) {
	g, err := e.newGCC(min(rate, bweMax))
	if err != nil {
		return
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		_ = g.Close()
		return
	}
	old := e.gcc
	e.gcc = g
	e.mu.Unlock()
	_ = old.Close()
}

func (e *probingEstimator) setPadder(p padder) {
	e.mu.Lock()
	e.padder = p
	e.mu.Unlock()
}

func (e *probingEstimator) clearPadder(p padder) {
	e.mu.Lock()
	if e.padder == p {
		e.padder = nil
	}
	e.mu.Unlock()
}

// GetTargetBitrate implements cc.BandwidthEstimator.
func (e *probingEstimator) GetTargetBitrate() int { return e.current().GetTargetBitrate() }

// OnTargetBitrateChange implements cc.BandwidthEstimator (unused here:
// the SFU polls the target).
func (e *probingEstimator) OnTargetBitrateChange(func(int)) {}

// GetStats implements cc.BandwidthEstimator.
func (e *probingEstimator) GetStats() map[string]any {
	s := e.current().GetStats()
	e.mu.Lock()
	s["probeClusters"], s["probeRaises"] = e.ctl.clusters, e.ctl.raises
	e.mu.Unlock()
	return s
}

// probeStats returns how many clusters were sent and how many raised the
// estimate.
func (e *probingEstimator) probeStats() (clusters, raises int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.ctl.clusters, e.ctl.raises
}

func (e *probingEstimator) current() *gcc.SendSideBWE {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.gcc
}

// Close implements cc.BandwidthEstimator: stops the pacer and GCC.
func (e *probingEstimator) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	close(e.stop)
	g := e.gcc
	e.mu.Unlock()
	e.wg.Wait()
	return g.Close()
}
