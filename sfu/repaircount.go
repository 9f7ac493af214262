package sfu

import (
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// repairCounts counts the loss repair pion's NACK interceptors do on one
// PeerConnection's wire: sequence numbers the generator NACKs to the
// remote, per media SSRC, and retransmissions (on the RTX SSRC) the
// responder sends to it. The interceptor is registered first, so it sits
// next to the network and sees what they write.
type repairCounts struct {
	mu     sync.Mutex
	nacked map[uint32]*atomic.Uint64
	resent map[uint32]*atomic.Uint64
}

func newRepairCounts() *repairCounts {
	return &repairCounts{nacked: map[uint32]*atomic.Uint64{}, resent: map[uint32]*atomic.Uint64{}}
}

func (r *repairCounts) counter(m map[uint32]*atomic.Uint64, ssrc uint32) *atomic.Uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := m[ssrc]
	if c == nil {
		c = new(atomic.Uint64)
		m[ssrc] = c
	}
	return c
}

// Nacked is the number of sequence numbers of ssrc NACKed to the remote.
func (r *repairCounts) Nacked(ssrc uint32) uint64 { return r.counter(r.nacked, ssrc).Load() }

// Resent is the number of packets of ssrc retransmitted to the remote.
func (r *repairCounts) Resent(ssrc uint32) uint64 { return r.counter(r.resent, ssrc).Load() }

// repairCounters hands each new PeerConnection's counts from the
// interceptor factory to the participant, like estimators.
type repairCounters struct{ m sync.Map }

func (f *repairCounters) NewInterceptor(id string) (interceptor.Interceptor, error) {
	c := newRepairCounts()
	f.m.Store(id, c)
	return &repairInterceptor{c: c}, nil
}

func (f *repairCounters) take(id string) *repairCounts {
	if v, ok := f.m.LoadAndDelete(id); ok {
		return v.(*repairCounts)
	}
	return newRepairCounts()
}

type repairInterceptor struct {
	interceptor.NoOp
	c *repairCounts
}

func (i *repairInterceptor) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	return interceptor.RTCPWriterFunc(func(pkts []rtcp.Packet, a interceptor.Attributes) (int, error) {
		for _, p := range pkts {
			if n, ok := p.(*rtcp.TransportLayerNack); ok {
				i.c.counter(i.c.nacked, n.MediaSSRC).Add(nackedSeqs(n))
			}
		}
		return w.Write(pkts, a)
	})
}

// BindLocalStream counts the packets sent on the stream's RTX SSRC.
// (Without RTX, retransmissions are indistinguishable and not counted.)
func (i *repairInterceptor) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	rtx := info.SSRCRetransmission
	if rtx == 0 {
		return w
	}
	n := i.c.counter(i.c.resent, info.SSRC)
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if h.SSRC == rtx {
			n.Add(1)
		}
		return w.Write(h, payload, a)
	})
}

// nackedSeqs is the number of sequence numbers a NACK asks for.
func nackedSeqs(n *rtcp.TransportLayerNack) uint64 {
	var k uint64
	for _, pair := range n.Nacks {
		k += 1 + uint64(bits.OnesCount16(uint16(pair.LostPackets)))
	}
	return k
}
