package rtctest

import (
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/stats"
	"github.com/pion/webrtc/v4"
)

// NewPeerWith is NewPeer with pion's default interceptors configured by
// opts (e.g. webrtc.WithNackGeneratorOptions), so a test can choose how the
// client asks for retransmissions.
func NewPeerWith(t testing.TB, o Options, opts ...webrtc.InterceptorOption) *Peer {
	t.Helper()
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		t.Fatal(err)
	}
	reg := &interceptor.Registry{}
	var getter *stats.Getter
	if o.Stats {
		var err error
		if getter, err = addStats(reg); err != nil {
			t.Fatal(err)
		}
	}
	if err := webrtc.RegisterDefaultInterceptorsWithOptions(m, reg, opts...); err != nil {
		t.Fatal(err)
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	// Like Chromium's, a replay window wide enough for late repairs: pion
	// numbers RTX packets when the original is sent, so an older packet's
	// retransmission can arrive far behind newer ones.
	se.SetSRTPReplayProtectionWindow(1024)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4})
	// Answer offers "a=setup:active" (DTLS client), as browsers do: pion
	// would answer an ICE-lite offerer (the SFU) "passive", making the SFU
	// the DTLS client, which leaves it without the SRTP keys of its fast
	// receive path (sfu/srtpkeys.go).
	_ = se.SetAnsweringDTLSRole(webrtc.DTLSRoleClient)
	if o.Configure != nil {
		o.Configure(&se)
	}
	api := webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se))
	cfg := webrtc.Configuration{ICEServers: o.ICEServers}
	if o.RelayOnly {
		cfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
	}
	pc, err := api.NewPeerConnection(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &Peer{t: t, PC: pc, stop: make(chan struct{}), changed: make(chan struct{}, 1),
		received: map[webrtc.RTPCodecType]*Received{}, remote: map[webrtc.RTPCodecType]*webrtc.TrackRemote{},
		stats: getter}
	p.Audio, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "test")
	if err != nil {
		t.Fatal(err)
	}
	p.Video, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "test")
	if err != nil {
		t.Fatal(err)
	}
	tracks := []*webrtc.TrackLocalStaticRTP{p.Audio, p.Video}
	if o.AudioOnly {
		tracks = tracks[:1]
	}
	for _, tr := range tracks {
		sender, err := pc.AddTrack(tr)
		if err != nil {
			t.Fatal(err)
		}
		p.wg.Add(1)
		go p.readRTCP(sender)
	}
	pc.OnTrack(p.onTrack)
	t.Cleanup(p.Close)
	return p
}

// NACKEvery makes the client send a NACK for every missing packet each
// interval, at most maxPerPacket times (0: until it leaves the window).
// pion's default is every 100 ms without limit; note that pion's generator
// never learns of packets repaired over RTX (pion/interceptor#320), so it
// uses all maxPerPacket NACKs on every lost packet.
func NACKEvery(interval time.Duration, maxPerPacket uint16) webrtc.InterceptorOption {
	return webrtc.WithNackGeneratorOptions(
		nack.GeneratorInterval(interval), nack.GeneratorMaxNacksPerPacket(maxPerPacket))
}
