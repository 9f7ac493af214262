package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/pion/webrtc/v4"

	"videochat/internal/sigclient"
)

// rtcPeer is one participant talking to the server: a signaling client and
// a pion PeerConnection with pion's default interceptors (NACK generator and
// responder, RTCP reports, TWCC), as a browser has them.
type rtcPeer struct {
	sig   *sigclient.Client
	pc    *webrtc.PeerConnection
	audio *webrtc.TrackLocalStaticRTP
	video *webrtc.TrackLocalStaticRTP
	snd   *sender
	rcv   receiver
	start time.Time // login began
	// Setup milestones, set once (unix nanoseconds; 0: not yet).
	loggedIn, iceUp, pcUp atomic.Int64

	stop     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once
}

type peerOptions struct {
	url       string
	name      string
	id        uint32
	local     *net.TCPAddr
	relayOnly bool
	prof      mediaProfile
}

func newAPI() (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	reg := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, reg); err != nil {
		return nil, err
	}
	se := webrtc.SettingEngine{}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled // errors of closing calls are expected noise
	se.LoggerFactory = lf
	se.SetIncludeLoopbackCandidate(true)
	se.SetSRTPReplayProtectionWindow(1024)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	// Answer offers "a=setup:active" (DTLS client), as browsers do: pion
	// would answer the ICE-lite server's offers "passive", making the
	// server the DTLS client of every callee, unlike with browsers.
	_ = se.SetAnsweringDTLSRole(webrtc.DTLSRoleClient)
	// pion's controlling agent waits 2 s before nominating a relayed pair
	// (in case a direct one turns up); relay-only clients have nothing
	// else to wait for, and browsers do not wait.
	se.SetRelayAcceptanceMinWait(0)
	sn, err := stdnet.NewNet()
	if err != nil {
		return nil, err
	}
	se.SetNet(bufferedNet{sn})
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)), nil
}

// bufferedNet gives the clients' UDP sockets 1 MiB buffers, so that a
// client briefly descheduled on a busy machine does not lose what the
// server forwarded (the kernel's default is about 200 KiB).
type bufferedNet struct{ *stdnet.Net }

const clientSocketBuffer = 1 << 20

func (n bufferedNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err == nil {
		_ = c.SetReadBuffer(clientSocketBuffer)
		_ = c.SetWriteBuffer(clientSocketBuffer)
	}
	return c, err
}

// dialPeer logs in and prepares the PeerConnection; media starts flowing
// once a call connects.
func dialPeer(ctx context.Context, api *webrtc.API, o peerOptions) (*rtcPeer, error) {
	p := &rtcPeer{start: time.Now(), stop: make(chan struct{})}
	sig, err := sigclient.Dial(ctx, o.url, o.name, sigclient.Options{LocalAddr: o.local})
	if err != nil {
		return nil, err
	}
	p.sig = sig
	p.loggedIn.Store(time.Now().UnixNano())
	cfg := webrtc.Configuration{}
	if o.relayOnly {
		cfg.ICEServers = sig.ICEServers
		cfg.ICETransportPolicy = webrtc.ICETransportPolicyRelay
		if len(cfg.ICEServers) == 0 {
			sig.Close()
			return nil, errors.New("relay-only: the server offered no ICE servers")
		}
	}
	if p.pc, err = api.NewPeerConnection(cfg); err != nil {
		sig.Close()
		return nil, err
	}
	if err := p.addTracks(); err != nil {
		p.close()
		return nil, err
	}
	p.snd = &sender{prof: o.prof, stream: o.id, write: p.writeRTP}
	p.pc.OnTrack(p.onTrack)
	p.pc.OnICEConnectionStateChange(func(s webrtc.ICEConnectionState) {
		if s == webrtc.ICEConnectionStateConnected {
			p.iceUp.CompareAndSwap(0, time.Now().UnixNano())
		}
	})
	p.pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		if s == webrtc.PeerConnectionStateConnected { // ICE and DTLS
			p.pcUp.CompareAndSwap(0, time.Now().UnixNano())
		}
	})
	sig.Attach(p.pc)
	return p, nil
}

func (p *rtcPeer) addTracks() error {
	var err error
	p.audio, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "load")
	if err != nil {
		return err
	}
	p.video, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8}, "video", "load")
	if err != nil {
		return err
	}
	for _, tr := range []*webrtc.TrackLocalStaticRTP{p.audio, p.video} {
		s, err := p.pc.AddTrack(tr)
		if err != nil {
			return err
		}
		p.wg.Add(1)
		go p.readRTCP(s)
	}
	return nil
}

// readRTCP drains a sender's RTCP (so the NACK responder works) and turns
// PLI/FIR into a keyframe, as a browser does.
func (p *rtcPeer) readRTCP(s *webrtc.RTPSender) {
	defer p.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, _, err := s.Read(buf)
		if err != nil {
			return
		}
		pkts, err := rtcp.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		for _, pkt := range pkts {
			switch pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				if p.snd != nil {
					p.snd.keyAsked.Store(true)
				}
			}
		}
	}
}

func (p *rtcPeer) writeRTP(kind uint8, pkt *rtp.Packet) error {
	if kind == kindAudio {
		return p.audio.WriteRTP(pkt)
	}
	return p.video.WriteRTP(pkt)
}

func (p *rtcPeer) onTrack(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	select {
	case <-p.stop:
		return
	default:
	}
	p.wg.Add(1)
	defer p.wg.Done()
	video := tr.Kind() == webrtc.RTPCodecTypeVideo
	buf := make([]byte, 1500)
	var h rtp.Header
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		hl, err := h.Unmarshal(buf[:n])
		if err != nil {
			continue
		}
		end := n
		if h.Padding && n > hl {
			end -= int(buf[n-1])
		}
		if end <= hl { // a padding-only probe
			continue
		}
		p.rcv.record(buf[hl:end], video, time.Now())
	}
}

// startMedia starts sending.
func (p *rtcPeer) startMedia() {
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.snd.run(p.stop) }()
}

// state describes how far the peer got, for errors.
func (p *rtcPeer) state() string {
	return fmt.Sprintf("ICE %s, PC %s, media %v", p.pc.ICEConnectionState(), p.pc.ConnectionState(), !p.rcv.firstPacket().IsZero())
}

func (p *rtcPeer) close() {
	p.stopOnce.Do(func() {
		close(p.stop)
		if p.sig != nil {
			p.sig.Close()
		}
		if p.pc != nil {
			_ = p.pc.Close()
		}
		p.wg.Wait()
	})
}

// rtcCall is one 1:1 call through the server.
type rtcCall struct {
	a, b     *rtcPeer
	setup    time.Duration // the caller's login to the first media at both ends
	accepted time.Time     // the caller heard "accepted"
	phases   setupPhases
}

// setupPhases splits a call's setup (each from the caller's login start).
type setupPhases struct {
	Login    time.Duration `json:"login"`    // the caller's WebSocket login done
	Accepted time.Duration `json:"accepted"` // offer sent, the server offered the callee, the callee answered: "accepted"
	ICE      time.Duration `json:"ice"`      // both PeerConnections' ICE connected
	DTLS     time.Duration `json:"dtls"`     // both PeerConnections connected (DTLS done)
	Media    time.Duration `json:"media"`    // first media packet at both ends (= setup)
}

// startRTCCall logs the callee in, then the caller (whose login starts the
// setup clock: the callee is already online), calls, waits for media both
// ways.
//
// With a gate, the call's media waits until every call of the gate's batch
// is through its handshakes; the call arrives at the gate however it ends.
func startRTCCall(ctx context.Context, api *webrtc.API, url string, i int, local func(int) *net.TCPAddr, relayOnly bool, prof mediaProfile, gate *setupGate) (*rtcCall, error) {
	arrive := sync.OnceFunc(gate.arrive)
	defer arrive()
	mk := func(side int) (*rtcPeer, error) {
		return dialPeer(ctx, api, peerOptions{url: url, name: fmt.Sprintf("load-%d-%d-%d", time.Now().UnixNano()%1e6, i, side),
			id: uint32(2*i + side), local: local(2*i + side), relayOnly: relayOnly, prof: prof})
	}
	b, err := mk(1)
	if err != nil {
		return nil, err
	}
	a, err := mk(0)
	if err != nil {
		b.close()
		return nil, err
	}
	c := &rtcCall{a: a, b: b}
	if err := c.connect(ctx, gate, arrive); err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

func (c *rtcCall) connect(ctx context.Context, gate *setupGate, arrive func()) error {
	if err := c.a.sig.Call(c.b.sig.Name); err != nil {
		return err
	}
	// The callee answers the server's offer (sigclient does); accepted
	// tells the caller.
	if _, err := c.a.sig.Expect("accepted", 15*time.Second); err != nil {
		return errors.Join(err, c.a.sig.Err(), c.b.sig.Err())
	}
	c.accepted = time.Now()
	deadline := time.Now().Add(15 * time.Second)
	if gate != nil {
		if err := c.awaitConnected(ctx, deadline); err != nil {
			return err
		}
		arrive()
		if err := gate.wait(ctx); err != nil {
			return err
		}
		deadline = time.Now().Add(15 * time.Second)
	}
	c.a.startMedia()
	c.b.startMedia()
	for c.a.rcv.firstPacket().IsZero() || c.b.rcv.firstPacket().IsZero() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s/%s: no media within 15 s (caller %s, callee %s)", c.a.sig.Name, c.b.sig.Name, c.a.state(), c.b.state())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	last := c.a.rcv.firstPacket()
	if f := c.b.rcv.firstPacket(); f.After(last) {
		last = f
	}
	c.setup = last.Sub(c.a.start)
	c.phases = c.measurePhases(last)
	return nil
}

// awaitConnected waits until both PeerConnections are connected (ICE and
// DTLS) or the deadline passes.
func (c *rtcCall) awaitConnected(ctx context.Context, deadline time.Time) error {
	for c.a.pcUp.Load() == 0 || c.b.pcUp.Load() == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s/%s: not connected within 15 s (caller %s, callee %s)", c.a.sig.Name, c.b.sig.Name, c.a.state(), c.b.state())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func (c *rtcCall) measurePhases(media time.Time) setupPhases {
	t0 := c.a.start.UnixNano()
	since := func(ns int64) time.Duration {
		if ns == 0 {
			return 0
		}
		return time.Duration(ns - t0)
	}
	later := func(x, y int64) int64 {
		if x == 0 || y == 0 {
			return 0
		}
		return max(x, y)
	}
	return setupPhases{
		Login:    since(c.a.loggedIn.Load()),
		Accepted: c.accepted.Sub(c.a.start),
		ICE:      since(later(c.a.iceUp.Load(), c.b.iceUp.Load())),
		DTLS:     since(later(c.a.pcUp.Load(), c.b.pcUp.Load())),
		Media:    media.Sub(c.a.start),
	}
}

func (c *rtcCall) receivers() []*receiver { return []*receiver{&c.a.rcv, &c.b.rcv} }

func (c *rtcCall) close() {
	var wg sync.WaitGroup
	for _, p := range []*rtcPeer{c.a, c.b} {
		wg.Add(1)
		go func() { defer wg.Done(); p.close() }()
	}
	wg.Wait()
}
