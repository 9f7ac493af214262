package sfu

import (
	"math"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
)

const (
	rrLossPct     = 5
	rrCallLength  = 10 * time.Second
	rrEdgeSlack   = 4 // drops before the first or after the last packet the SFU got (p^4 ≈ 6e-6 at 5 %)
	rrMinRTT      = 35 * time.Millisecond
	rrMaxRTT      = 2*lossPubDelay + 300*time.Millisecond // scheduling on a busy 2-core machine under -race
	rrWaitReports = 6 * time.Second
)

// TestReceiverReportsWholePath: a pion client publishes through the SFU
// with 5 % loss (and 20 ms each way) on its link. The SFU's receiver
// reports, as the client's RTPSenders read them, count exactly the packets
// of each stream the link dropped (cumulative), report per interval a
// fraction lost whose mean is the measured loss, advance the extended
// highest sequence number to the last packet sent, and carry the client's
// last SR (LSR) with its delay, from which the client's own statistics
// compute the round trip.
func TestReceiverReportsWholePath(t *testing.T) {
	n := newLossyNet(t, rrLossPct)
	s, err := New(Config{Net: n.sfuNet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	call := s.NewCall(t.Name())
	t.Cleanup(call.Close)
	o := vnetClientOptions(n.pub.net)
	o.Stats = true
	pub := joinWith(t, call, "pub", true, o)
	waitConnected(t, "pub", pub, 10*time.Second)

	stop := pub.StartMedia(lossVideo)
	time.Sleep(rrCallLength)
	stop()
	stopped := time.Now()

	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		ssrc := pub.SenderSSRC(kind)
		// The last packets are 20 ms away and a report goes out every
		// second: two reports after the stop describe the whole stream.
		var reports []rtctest.ReportAt
		if _, ok := waitUntil(func() bool {
			reports = pub.ReceptionReports(ssrc)
			after := 0
			for _, r := range reports {
				if r.At.After(stopped.Add(100 * time.Millisecond)) {
					after++
				}
			}
			return after >= 2
		}, rrWaitReports); !ok {
			t.Fatalf("%s: %d reports, fewer than 2 after the media stopped", kind, len(reports))
		}
		passed, dropped := n.pub.upCount(ssrc)
		sent := passed + dropped
		p := float64(dropped) / float64(sent)
		last := reports[len(reports)-1]
		t.Logf("%s ssrc %d: link dropped %d of %d (%.2f %%); %d reports, last: cumulative lost %d, ext highest %d, jitter %d, LSR %#x, DLSR %.3f s",
			kind, ssrc, dropped, sent, 100*p, len(reports), last.TotalLost, last.LastSequenceNumber, last.Jitter,
			last.LastSenderReport, float64(last.Delay)/65536)
		if dropped == 0 {
			t.Fatalf("%s: the link dropped nothing", kind)
		}
		if d := int64(last.TotalLost) - dropped; d < -rrEdgeSlack || d > rrEdgeSlack {
			t.Errorf("%s: reported %d lost, the link dropped %d (tolerance ±%d for drops at the ends)",
				kind, last.TotalLost, dropped, rrEdgeSlack)
		}
		// StartMedia numbers from 0: the last packet sent is sent-1.
		if ext := int64(last.LastSequenceNumber); ext > sent-1 || ext < sent-1-rrEdgeSlack {
			t.Errorf("%s: extended highest sequence number %d, last sent %d", kind, ext, sent-1)
		}
		// Per interval: the mean fraction lost over the reports during the
		// media is the measured loss, within 4 standard deviations of a
		// binomial sample of all the packets, plus one step of the field's
		// truncation.
		var sum float64
		var during int
		prev := uint32(0)
		for i, r := range reports {
			if r.At.After(stopped) {
				break
			}
			if i > 0 && r.LastSequenceNumber <= prev {
				t.Errorf("%s: report %d: extended highest sequence number %d after %d", kind, i, r.LastSequenceNumber, prev)
			}
			prev = r.LastSequenceNumber
			sum += float64(r.FractionLost) / 256
			during++
		}
		mean := sum / float64(max(during, 1))
		tol := 4*math.Sqrt(p*(1-p)/float64(sent)) + 1.0/256
		t.Logf("%s: mean fraction lost %.2f %% over %d reports (tolerance ±%.2f %%)", kind, 100*mean, during, 100*tol)
		if during < int(rrCallLength/rrInterval)/2 {
			t.Errorf("%s: only %d reports during %v of media", kind, during, rrCallLength)
		}
		if math.Abs(mean-p) > tol {
			t.Errorf("%s: mean fraction lost %.2f %%, the link dropped %.2f %%", kind, 100*mean, 100*p)
		}
		if last.LastSenderReport == 0 || last.Delay == 0 {
			t.Errorf("%s: no LSR/DLSR in the last report", kind)
		}
		// The client's statistics match the LSR against the SRs it sent
		// and compute the round trip: 2 × 20 ms on the link.
		st := pub.OutboundStats(ssrc)
		if st == nil {
			t.Fatalf("%s: no client statistics", kind)
		}
		ri := st.RemoteInboundRTPStreamStats
		t.Logf("%s: client's remote-inbound: round trip %v (%d measurements), packets lost %d, fraction lost %.3f",
			kind, ri.RoundTripTime, ri.RoundTripTimeMeasurements, ri.PacketsLost, ri.FractionLost)
		if ri.RoundTripTimeMeasurements == 0 || ri.RoundTripTime < rrMinRTT || ri.RoundTripTime > rrMaxRTT {
			t.Errorf("%s: client's round trip %v (%d measurements), want %v-%v",
				kind, ri.RoundTripTime, ri.RoundTripTimeMeasurements, rrMinRTT, rrMaxRTT)
		}
	}
}
