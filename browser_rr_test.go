package main

import (
	"testing"
	"time"

	"videochat/internal/browsertest"
)

// remoteInbound is Chrome's view of how the server receives one of its
// outgoing streams (from the server's receiver reports), and what it sent.
type remoteInbound struct {
	RTT          float64 `json:"rtt"` // seconds; -1 if absent
	Measurements int     `json:"n"`
	Lost         int     `json:"lost"`
	Fraction     float64 `json:"fraction"`
	Sent         int     `json:"sent"`
}

const remoteInboundJS = `(async () => {
  const out = {}, a = window.app;
  if (!a.pc) return out;
  const s = await a.pc.getStats();
  const sent = {};
  s.forEach(r => { if (r.type === 'outbound-rtp') sent[r.kind] = (sent[r.kind] || 0) + (r.packetsSent || 0); });
  s.forEach(r => {
    if (r.type !== 'remote-inbound-rtp') return;
    out[r.kind] = {rtt: r.roundTripTime ?? -1, n: r.roundTripTimeMeasurements || 0,
      lost: r.packetsLost ?? -1, fraction: r.fractionLost ?? -1, sent: sent[r.kind] || 0};
  });
  return out;
})()`

const (
	rrBrowserMeasurements = 3     // one receiver report a second
	rrBrowserMaxRTT       = 0.5   // s; loopback, with a busy machine's scheduling
	rrBrowserMaxLost      = 0.005 // of the packets sent; loopback drops nothing (the socket buffer could, in a burst)
	rrBrowserWait         = 15 * time.Second
)

// TestBrowserReceiverReports: the server's own receiver reports reach
// Chrome: its remote-inbound-rtp stats for the video (and audio) it sends
// show a round trip measured from them (the LSR/DLSR of the server's
// blocks match Chrome's sender reports) and, on loopback, no loss.
func TestBrowserReceiverReports(t *testing.T) {
	app := startApp(t, nil)
	b := browsertest.Launch(t)
	caller, _ := browserCall(t, b, app.URL())

	var got map[string]remoteInbound
	deadline := time.Now().Add(rrBrowserWait)
	for {
		got = map[string]remoteInbound{}
		caller.Eval(remoteInboundJS, &got)
		if v, a := got["video"], got["audio"]; v.Measurements >= rrBrowserMeasurements && a.Measurements >= rrBrowserMeasurements {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Chrome's remote-inbound-rtp after %v: %+v; want %d round-trip measurements for video and audio",
				rrBrowserWait, got, rrBrowserMeasurements)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, kind := range []string{"video", "audio"} {
		r := got[kind]
		t.Logf("%s: round trip %.1f ms (%d measurements), %d lost of %d sent, fraction lost %.3f",
			kind, 1000*r.RTT, r.Measurements, r.Lost, r.Sent, r.Fraction)
		if r.RTT <= 0 || r.RTT > rrBrowserMaxRTT {
			t.Errorf("%s: round trip %v s, want (0, %v]", kind, r.RTT, rrBrowserMaxRTT)
		}
		if r.Sent == 0 || r.Lost < 0 || float64(r.Lost) > rrBrowserMaxLost*float64(r.Sent) {
			t.Errorf("%s: %d packets lost of %d sent, want at most %.1f %%", kind, r.Lost, r.Sent, 100*rrBrowserMaxLost)
		}
	}
}
