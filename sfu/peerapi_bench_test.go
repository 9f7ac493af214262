package sfu

import (
	"testing"

	"github.com/pion/webrtc/v4"
)

// BenchmarkNewPeerAPI is what a participant's own webrtc.API costs
// (interceptor Registry, SettingEngine copy with hooks, NewAPI);
// BenchmarkNewPeerConnection, for scale, a PeerConnection from it.
func BenchmarkNewPeerAPI(b *testing.B) {
	s := newTestSFU(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.newPeerAPI(&peerHooks{}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkNewPeerConnection(b *testing.B) {
	s := newTestSFU(b)
	b.ReportAllocs()
	for b.Loop() {
		h := &peerHooks{}
		api, err := s.newPeerAPI(h)
		if err != nil {
			b.Fatal(err)
		}
		pc, err := api.NewPeerConnection(webrtc.Configuration{})
		if err != nil {
			b.Fatal(err)
		}
		if e := s.est.take(pc.ID()); e != nil {
			_ = e.Close()
		}
		s.rep.take(pc.ID())
		_ = pc.Close()
	}
}
