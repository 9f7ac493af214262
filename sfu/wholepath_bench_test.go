package sfu

import (
	"runtime"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
)

// BenchmarkWholePath drives two real pion peers: alice sends video packets
// (1,100-byte payloads, paced in bursts of 20) and bob receives them. Run
// "sfu" goes through the SFU over loopback (SRTP, interceptors, the UDP mux,
// forwarding, the same on the way out); run "direct" connects the two peers
// to each other, so the difference is what the SFU adds. Both report
// allocs/fwd-pkt and B/fwd-pkt: heap allocations of the whole process per
// packet that arrived at bob (clients included).
//
// Run "sfu" has alice's media on the receive fast path (rxfast.go: she
// offers, so the SFU is the DTLS server and knows her keys) and bob's on
// the send fast path (txfast.go); "sfu-pion-send" has the send fast path
// off (Config.PionSend), "sfu-pion" both (Config.PionReceive). They also
// report cpu-µs/fwd-pkt: the process's CPU time (user and system, clients
// included) per forwarded packet.
func BenchmarkWholePath(b *testing.B) {
	for name, cfg := range map[string]Config{"sfu": {}, "sfu-pion-send": {PionSend: true}, "sfu-pion": {PionReceive: true}} {
		b.Run(name, func(b *testing.B) {
			s := newTestSFUWith(b, cfg)
			call := s.NewCall("bench")
			b.Cleanup(call.Close)
			a := joinWith(b, call, "alice", true, rtctest.Options{})
			bob := joinWith(b, call, "bob", false, rtctest.Options{})
			benchPath(b, a.Peer, bob.Peer)
		})
	}
	b.Run("direct", func(b *testing.B) {
		a := rtctest.NewPeer(b, rtctest.Options{})
		bob := rtctest.NewPeer(b, rtctest.Options{})
		connectDirect(b, a.PC, bob.PC)
		benchPath(b, a, bob)
	})
}

func connectDirect(b testing.TB, a, c *webrtc.PeerConnection) {
	b.Helper()
	offer, err := a.CreateOffer(nil)
	if err != nil {
		b.Fatal(err)
	}
	done := webrtc.GatheringCompletePromise(a)
	if err := a.SetLocalDescription(offer); err != nil {
		b.Fatal(err)
	}
	<-done
	if err := c.SetRemoteDescription(*a.LocalDescription()); err != nil {
		b.Fatal(err)
	}
	answer, err := c.CreateAnswer(nil)
	if err != nil {
		b.Fatal(err)
	}
	done = webrtc.GatheringCompletePromise(c)
	if err := c.SetLocalDescription(answer); err != nil {
		b.Fatal(err)
	}
	<-done
	if err := a.SetRemoteDescription(*c.LocalDescription()); err != nil {
		b.Fatal(err)
	}
}

func benchPath(b *testing.B, a, bob *rtctest.Peer) {
	pkt := &rtp.Packet{Header: rtp.Header{Version: 2}, Payload: make([]byte, 1100)}
	var seq uint16
	send := func() {
		seq++
		pkt.SequenceNumber, pkt.Timestamp, pkt.Marker = seq, uint32(seq)*3000, true
		pkt.Payload = pkt.Payload[:1100]
		_ = a.Video.WriteRTP(pkt)
	}
	received := func() int { return bob.Received(webrtc.RTPCodecTypeVideo).Packets }
	// Until the path is up and bob's track is read.
	deadline := time.Now().Add(15 * time.Second)
	for received() < 20 {
		if time.Now().After(deadline) {
			b.Fatal("no media within 15 s")
		}
		send()
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	r0 := received()
	cpu0 := processCPU()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		send()
		if i%20 == 19 {
			// Let the burst through (at most 2 ms), as a pacer would.
			want := r0 + i - 40
			for t := 0; t < 20 && received() < want; t++ {
				time.Sleep(100 * time.Microsecond)
			}
		}
	}
	wantAll := r0 + b.N
	for t := 0; t < 100 && received() < wantAll; t++ {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	cpu := processCPU() - cpu0
	runtime.ReadMemStats(&m1)
	fwd := received() - r0
	if fwd <= 0 {
		b.Fatal("nothing forwarded")
	}
	b.ReportMetric(float64(m1.Mallocs-m0.Mallocs)/float64(fwd), "allocs/fwd-pkt")
	b.ReportMetric(float64(m1.TotalAlloc-m0.TotalAlloc)/float64(fwd), "B/fwd-pkt")
	b.ReportMetric(100*float64(b.N-fwd)/float64(b.N), "%lost")
	b.ReportMetric(float64(cpu.Microseconds())/float64(fwd), "cpu-µs/fwd-pkt")
}
