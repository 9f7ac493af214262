package rtctest

import (
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/stats"
	"github.com/pion/rtcp"
	"github.com/pion/webrtc/v4"
)

// maxReports bounds the reception reports a Peer keeps (minutes of them).
const maxReports = 4096

// ReportAt is a reception report block the peer received about one of its
// outgoing streams, and when.
type ReportAt struct {
	rtcp.ReceptionReport
	At time.Time
}

// noteReports keeps the report blocks about ssrc in RRs and SRs its
// sender received (pion hands a packet with blocks for several of our
// streams to each of their senders).
func (p *Peer) noteReports(pkt rtcp.Packet, ssrc uint32) {
	var blocks []rtcp.ReceptionReport
	switch r := pkt.(type) {
	case *rtcp.ReceiverReport:
		blocks = r.Reports
	case *rtcp.SenderReport:
		blocks = r.Reports
	}
	if len(blocks) == 0 {
		return
	}
	now := time.Now()
	p.mu.Lock()
	for _, b := range blocks {
		if b.SSRC == ssrc && len(p.reports) < maxReports {
			p.reports = append(p.reports, ReportAt{b, now})
		}
	}
	p.mu.Unlock()
}

// ReceptionReports returns the report blocks received so far about the
// outgoing stream ssrc, oldest first.
func (p *Peer) ReceptionReports(ssrc uint32) []ReportAt {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []ReportAt
	for _, r := range p.reports {
		if r.SSRC == ssrc {
			out = append(out, r)
		}
	}
	return out
}

// SenderSSRC returns the SSRC of the peer's outgoing track of kind (0 if
// none).
func (p *Peer) SenderSSRC(kind webrtc.RTPCodecType) uint32 {
	for _, s := range p.PC.GetSenders() {
		if tr := s.Track(); tr != nil && tr.Kind() == kind {
			if enc := s.GetParameters().Encodings; len(enc) > 0 {
				return uint32(enc[0].SSRC)
			}
		}
	}
	return 0
}

// addStats registers pion's stats interceptor first in reg: innermost on
// the write path, so it sees the sender reports pion's report interceptor
// writes (the default registration, after the report interceptor, does
// not, and never computes a round trip), and returns where its getter
// will be.
func addStats(reg *interceptor.Registry) (*stats.Getter, error) {
	f, err := stats.NewInterceptor()
	if err != nil {
		return nil, err
	}
	g := new(stats.Getter)
	f.OnNewPeerConnection(func(_ string, getter stats.Getter) { *g = getter })
	reg.Add(f)
	return g, nil
}

// OutboundStats returns pion's statistics of the outgoing stream ssrc,
// among them the remote side's view (RemoteInboundRTPStreamStats: loss,
// round trip from its receiver reports); nil unless Options.Stats.
func (p *Peer) OutboundStats(ssrc uint32) *stats.Stats {
	if p.stats == nil || *p.stats == nil {
		return nil
	}
	return (*p.stats).Get(ssrc)
}
