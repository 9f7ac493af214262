package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

// BenchmarkTransportEcho measures the CPU cost of one round trip between a
// pion client and the SFU (sfu.Echo: a data-channel message sent back) by
// transport: UDP, ICE-TCP straight to the SFU, and TURN over UDP and TCP
// relaying to the SFU's UDP port. CPU is the whole process's (client,
// relay and SFU all run in it), from getrusage, per round trip (two
// datagrams, or two framed TCP messages, plus SCTP acknowledgements).
//
//	go test -run XXX -bench TransportEcho -benchtime 20000x .
func BenchmarkTransportEcho(b *testing.B) {
	app := startApp(b, func(c *Config) {
		c.TURNAddr, c.TURNSecret, c.ICETCP = "127.0.0.1:0", "s3cret", true
	})
	for _, tr := range []string{"udp", "ice-tcp", "turn-udp", "turn-tcp"} {
		b.Run(tr, func(b *testing.B) {
			dc, closeFn := echoClient(b, app, tr)
			defer closeFn()
			got := make(chan struct{}, 1)
			dc.OnMessage(func(webrtc.DataChannelMessage) { got <- struct{}{} })
			msg := bytes.Repeat([]byte{'x'}, 200)
			roundTrip := func() {
				if err := dc.Send(msg); err != nil {
					b.Fatal(err)
				}
				select {
				case <-got:
				case <-time.After(5 * time.Second):
					b.Fatal("no echo")
				}
			}
			for range 200 { // warm up
				roundTrip()
			}
			before := cpuTime()
			start := time.Now()
			b.ResetTimer()
			for range b.N {
				roundTrip()
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-before).Microseconds())/float64(b.N), "cpu-µs/rt")
			b.ReportMetric(float64(time.Since(start).Microseconds())/float64(b.N), "wall-µs/rt")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// echoClient connects a pion data channel to the app's /diag/echo over one
// transport, keeping only the server candidates that transport can reach.
func echoClient(tb testing.TB, app *App, transport string) (*webrtc.DataChannel, func()) {
	tb.Helper()
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	se.SetRelayAcceptanceMinWait(0)
	cfg := webrtc.Configuration{}
	keep := "udp"
	switch transport {
	case "udp":
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	case "ice-tcp":
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeTCP4})
		keep = "tcp"
	case "turn-udp", "turn-tcp":
		cfg.ICEServers = onlyTransport(app.turn.ICEServers("bench", "127.0.0.1"), strings.TrimPrefix(transport, "turn-"))
		cfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	pc, err := webrtc.NewAPI(webrtc.WithSettingEngine(se)).NewPeerConnection(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	dc, err := pc.CreateDataChannel("bench", nil)
	if err != nil {
		tb.Fatal(err)
	}
	open := make(chan struct{})
	dc.OnOpen(func() { close(open) })
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		tb.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		tb.Fatal(err)
	}
	<-gathered
	body, _ := json.Marshal(pc.LocalDescription())
	resp, err := http.Post(app.URL()+"diag/echo", "application/json", bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	var answer webrtc.SessionDescription
	err = json.NewDecoder(resp.Body).Decode(&answer)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		tb.Fatalf("echo: %s %v", resp.Status, err)
	}
	answer.SDP = keepCandidates(answer.SDP, keep)
	if err := pc.SetRemoteDescription(answer); err != nil {
		tb.Fatal(err)
	}
	select {
	case <-open:
	case <-time.After(10 * time.Second):
		tb.Fatalf("%s: data channel not open", transport)
	}
	if p, err := pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair(); err == nil && p != nil {
		tb.Logf("%s: %s", transport, p)
	}
	return dc, func() { _ = pc.Close() }
}

// keepCandidates drops the a=candidate lines of other protocols than proto.
func keepCandidates(sdp, proto string) string {
	var out []string
	for _, l := range strings.Split(sdp, "\r\n") {
		if f := strings.Fields(l); strings.HasPrefix(l, "a=candidate:") && len(f) > 2 && !strings.EqualFold(f[2], proto) {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\r\n")
}
