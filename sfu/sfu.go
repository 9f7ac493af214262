// Package sfu terminates each participant's WebRTC PeerConnection and
// forwards RTP between the participants of a call.
//
// It knows nothing of WebSocket or JSON: the outside world reaches a
// participant through the Signaler interface, which must never block.
package sfu

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/logging"
	"github.com/pion/transport/v4"
	"github.com/pion/webrtc/v4"
)

// Config configures an SFU. The zero value is usable: media on an
// ephemeral UDP port of every interface.
type Config struct {
	// UDPPort is the one UDP port all media uses (0 = ephemeral).
	UDPPort int
	// PublicIPs, if set, replace the host candidates' addresses (1:1 NAT).
	PublicIPs []string
	// IncludeLoopback offers loopback candidates; needed when the host's
	// only interface is loopback (tests in network namespaces).
	IncludeLoopback bool
	// Net replaces the real network (pion transport/v4/vnet in tests).
	Net transport.Net
	// ICEFailedTimeout is the grace period: how long a participant's
	// connection may be lost (or an ICE restart take) before it counts as
	// failed and its call ends (default 15 s). The Signaler hears
	// Interrupted when the loss is noticed and Restored if it comes back.
	ICEFailedTimeout time.Duration
	// ICEDisconnectedTimeout is how long the client may be silent before
	// its connection counts as lost (default min(5 s, ICEFailedTimeout/3)).
	ICEDisconnectedTimeout time.Duration
	// ConnectTimeout bounds the time from a PeerConnection's first remote
	// description to its first connected state (default 30 s). A callee's
	// PeerConnection waiting for the phone to be answered is not counted.
	ConnectTimeout time.Duration
	// DTLSTimeout bounds the DTLS handshake (default 10 s).
	DTLSTimeout time.Duration
	// KeyframeInterval is the minimum interval between two keyframe
	// requests sent to one publisher track (default 500 ms).
	KeyframeInterval time.Duration
	// ICETCP, if not empty, are listeners of passive ICE-TCP (RFC 6544;
	// RFC 4571 framing): every PeerConnection then also offers a TCP host
	// candidate on each listener's port, which a browser that cannot use
	// UDP reaches directly, without a TURN relay. The SFU owns them (Close
	// closes them).
	ICETCP []net.Listener
	// SocketBuffer is the receive and send buffer of the media socket(s)
	// in bytes (default 2 MiB). All calls share one socket, so the
	// kernel's default (about 200 KiB: 5 ms of 50 calls) overflows on
	// bursts; the kernel caps the request at net.core.rmem_max/wmem_max
	// (and doubles it for its bookkeeping).
	SocketBuffer int
	// BatchedReads reads the media sockets in recvmmsg batches (Linux;
	// batchconn_linux.go): one system call for up to 32 queued datagrams.
	// Off by default: on the development machine it cut the receive
	// system calls 3-15x but not the CPU per forwarded packet (README,
	// Performance). Ignored with Net.
	BatchedReads bool
	// NetSyscalls reads and writes the media sockets with net's system
	// calls instead of raw ones (rawconn_linux.go: a non-blocking UDP
	// read or write does not tell the scheduler it may block, which at 50
	// calls cut the CPU per forwarded packet by a fifth). For comparison;
	// ignored with Net (always net's) and off Linux (likewise).
	NetSyscalls bool
	// MediaReaders is the number of sockets per media address, each read
	// by its own goroutine that runs the receive fast path (readers.go;
	// SO_REUSEPORT, Linux): 0 is GOMAXPROCS capped at 4; 1 is one socket
	// read by pion's UDP mux. Ignored (1) with Net or PionReceive.
	MediaReaders int
	// PionReceive turns the receive fast path off (rxfast.go): every
	// RTP packet then goes through pion's readers (for comparison).
	PionReceive bool
	// PionSend turns the send fast path off (txfast.go): every RTP packet
	// then goes out through pion's SRTP session and ICE connection (for
	// comparison). The send fast path follows the receive fast path's
	// routes, so PionReceive turns it off too.
	PionSend bool
	// PionRTCP turns the RTCP fast path off (rtcpfast.go): all RTCP goes
	// through pion's readers. PionReceive turns it off too.
	PionRTCP bool
	// Recorder, if set, is offered every published track.
	Recorder Recorder
	Logger   *slog.Logger

	afterFunc      afterFunc     // timers of the connection lifecycle; nil = time.AfterFunc (tests fake it)
	reportInterval time.Duration // between receiver reports; 0 = rrInterval (tests shorten it)
}

// defaultSocketBuffer holds about 100 ms of 50 calls' packets (17,500/s,
// ~2.3 KiB of kernel memory each; the kernel doubles the request). More
// only turns an overloaded server's loss into seconds of latency: with
// 4 MiB, 25 calls on a busy machine had a standing queue of 200 ms.
const defaultSocketBuffer = 2 << 20

// SFU owns the pion settings and the shared UDP socket(s) all
// PeerConnections use. Each participant gets its own webrtc.API
// (newPeerAPI): a copy of the base SettingEngine with its own DTLS hooks
// and its own interceptor Registry, so that per-PeerConnection state (SRTP
// keys, interceptor instances) is reachable through its peerHooks.
type SFU struct {
	cfg   Config
	est   *estimators
	rep   *repairCounters
	media *webrtc.MediaEngine  // shared; pion copies it per PeerConnection
	se    webrtc.SettingEngine // base settings, copied per participant
	api   *webrtc.API          // of the diagnostic PeerConnections (echo.go), shared
	mux   *ice.MultiUDPMuxDefault
	tcp   []*ice.TCPMuxDefault // passive ICE-TCP, one per Config.ICETCP listener
	echo  echoes               // diagnostic PeerConnections (echo.go)
	fast  *fastTable           // the receive fast path; nil if off (rxfast.go)
	rdrs  *readerSet           // media sockets with several readers (readers.go)
	log   *slog.Logger

	mu     sync.Mutex
	calls  map[*Call]struct{}
	closed bool

	// totMu guards the counters of participants that have left (ended)
	// and the set of those whose numbers are still moving (live).
	totMu sync.Mutex
	ended Totals
	live  map[*Participant]struct{}
}

// New builds an SFU and binds its media port.
func New(cfg Config) (*SFU, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.ICEFailedTimeout <= 0 {
		cfg.ICEFailedTimeout = 15 * time.Second
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 30 * time.Second
	}
	if cfg.DTLSTimeout <= 0 {
		cfg.DTLSTimeout = 10 * time.Second
	}
	if cfg.KeyframeInterval <= 0 {
		cfg.KeyframeInterval = 500 * time.Millisecond
	}
	if cfg.reportInterval <= 0 {
		cfg.reportInterval = rrInterval
	}
	if cfg.SocketBuffer <= 0 {
		cfg.SocketBuffer = defaultSocketBuffer
	}
	opts := []ice.UDPMuxFromPortOption{
		ice.UDPMuxFromPortWithNetworks(ice.NetworkTypeUDP4, ice.NetworkTypeUDP6),
		ice.UDPMuxFromPortWithReadBufferSize(cfg.SocketBuffer),
		ice.UDPMuxFromPortWithWriteBufferSize(cfg.SocketBuffer),
		// Link-local addresses reach no one beyond the link (and a fresh
		// IPv6 one cannot even be bound until duplicate detection ends).
		ice.UDPMuxFromPortWithIPFilter(func(ip net.IP) bool { return !ip.IsLinkLocalUnicast() }),
	}
	if cfg.IncludeLoopback {
		opts = append(opts, ice.UDPMuxFromPortWithLoopback())
	}
	var fast *fastTable
	if !cfg.PionReceive {
		fast = newFastTable(iceDisconnectedTimeout(cfg))
	}
	rdrs := &readerSet{}
	switch {
	case fast != nil || (cfg.Net == nil && (cfg.BatchedReads || !cfg.NetSyscalls)):
		mediaNet, err := newMediaNet(cfg.Net, cfg.BatchedReads, !cfg.NetSyscalls, fast, mediaReaders(cfg))
		if err != nil {
			return nil, err
		}
		rdrs = mediaNet.opened
		opts = append(opts, ice.UDPMuxFromPortWithNet(mediaNet))
	case cfg.Net != nil:
		opts = append(opts, ice.UDPMuxFromPortWithNet(cfg.Net))
	}
	mux, err := ice.NewMultiUDPMuxFromPort(cfg.UDPPort, opts...)
	if err != nil {
		return nil, fmt.Errorf("sfu: media port %d: %w", cfg.UDPPort, err)
	}
	est, rep := &estimators{}, &repairCounters{}
	tcp := newTCPMuxes(cfg)
	s := &SFU{cfg: cfg, est: est, rep: rep, se: newSettingEngine(cfg, mux, tcp), mux: mux, tcp: tcp, fast: fast, rdrs: rdrs, log: cfg.Logger,
		calls: map[*Call]struct{}{}, live: map[*Participant]struct{}{}}
	if s.media, err = newMediaEngine(); err != nil {
		_ = mux.Close()
		closeTCPMuxes(tcp)
		return nil, err
	}
	// The diagnostic PeerConnections carry data channels only: no
	// interceptors (the estimator and repair counters they would hand
	// over by PeerConnection id would never be taken: a leak per echo).
	s.api = webrtc.NewAPI(webrtc.WithMediaEngine(s.media),
		webrtc.WithInterceptorRegistry(&interceptor.Registry{}), webrtc.WithSettingEngine(s.se))
	return s, nil
}

// mediaReaders is the number of sockets per media address.
func mediaReaders(cfg Config) int {
	if cfg.MediaReaders > 0 {
		return cfg.MediaReaders
	}
	return defaultMediaReaders()
}

// ReceivePath counts the RTP packets received so far by the path they
// took (all zero with Config.PionReceive).
func (s *SFU) ReceivePath() ReceivePathStats {
	if s.fast == nil {
		return ReceivePathStats{}
	}
	return s.fast.snapshot()
}

// SendPath counts the RTP packets sent so far by the path they took (all
// zero with Config.PionSend or PionReceive).
func (s *SFU) SendPath() SendPathStats {
	if s.fast == nil {
		return SendPathStats{}
	}
	return s.fast.txSnapshot()
}

// MediaReaders returns the RTP and RTCP packets each media socket
// reader's fast paths took: with several sockets per address
// (Config.MediaReaders) the sockets of one address together, addresses
// in the order they were opened; empty with one reader per address.
func (s *SFU) MediaReaders() []uint64 { return s.rdrs.taken() }

// MediaAddrs returns the local addresses of the media socket(s).
func (s *SFU) MediaAddrs() []*net.UDPAddr {
	var out []*net.UDPAddr
	for _, a := range s.mux.GetListenAddresses() {
		if u, ok := a.(*net.UDPAddr); ok {
			out = append(out, u)
		}
	}
	return out
}

// Close ends every call the SFU still tracks (their participants'
// PeerConnections are closed when it returns) and releases the media port.
// A call created after Close is closed already.
func (s *SFU) Close() error {
	s.mu.Lock()
	s.closed = true
	calls := make([]*Call, 0, len(s.calls))
	for c := range s.calls {
		calls = append(calls, c)
	}
	s.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range calls {
		wg.Add(1)
		go func() { defer wg.Done(); c.Close() }()
	}
	wg.Wait()
	s.echo.closeAll()
	closeTCPMuxes(s.tcp)
	return s.mux.Close()
}

// newPeerAPI builds the API of one participant's PeerConnection: the
// shared MediaEngine, a copy of the base SettingEngine with h's DTLS hooks,
// and a Registry whose interceptors report their instances to h.
func (s *SFU) newPeerAPI(h *peerHooks) (*webrtc.API, error) {
	var tx *fastTable
	if !s.cfg.PionSend {
		tx = s.fast
	}
	reg, err := newRegistry(s.est, s.rep, h, tx, s.fast != nil && !s.cfg.PionRTCP)
	if err != nil {
		return nil, err
	}
	se := s.se // a copy: the hooks below are this PeerConnection's only
	h.keys.install(&se)
	return webrtc.NewAPI(
		webrtc.WithMediaEngine(s.media),
		webrtc.WithInterceptorRegistry(reg),
		webrtc.WithSettingEngine(se),
	), nil
}

// newSettingEngine holds the settings every PeerConnection of the SFU
// shares.
func newSettingEngine(cfg Config, mux ice.UDPMux, tcp []*ice.TCPMuxDefault) webrtc.SettingEngine {
	se := webrtc.SettingEngine{}
	// Set once: NewAPI would otherwise build a logger factory per API.
	se.LoggerFactory = logging.NewDefaultLoggerFactory()
	se.SetICEUDPMux(mux)
	se.SetLite(true) // we are reachable; clients nominate, relay pairs connect fast
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6})
	setICETCP(&se, tcp)
	se.SetIncludeLoopbackCandidate(cfg.IncludeLoopback)
	se.SetDTLSRetransmissionInterval(100 * time.Millisecond)
	// The SFU is the DTLS server whatever the side that offers: when it
	// answers, by this setting ("a=setup:passive"); when it offers
	// ("actpass"), browsers and pion answer "active". As the server it
	// writes the ServerHello, whose random the SRTP key export needs
	// (srtpkeys.go).
	_ = se.SetAnsweringDTLSRole(webrtc.DTLSRoleServer) // errors only for other roles
	// Some senders (pion among them) number RTX packets when the original
	// is sent, so a retransmission of an older packet carries an older RTX
	// sequence number than one sent before it; with SRTP's default 64-packet
	// replay window those repairs would be dropped as too old.
	se.SetSRTPReplayProtectionWindow(srtpReplayWindow)
	// pion reports disconnected after iceDisconnectedTimeout of silence and
	// failed after ICEFailedTimeout more, which is when our own grace timer
	// (started at disconnected) runs out too. pion's failed is not final: a
	// client's offer with new ICE credentials restarts the agent
	// (ice.Agent.Restart moves it back to checking), so the grace timer in
	// lifecycle.go, not pion, ends the call.
	se.SetICETimeouts(iceDisconnectedTimeout(cfg), cfg.ICEFailedTimeout, time.Second)
	// A handshake that stalls (lost flights, a client gone) fails the
	// PeerConnection instead of holding it open.
	dtlsTimeout := cfg.DTLSTimeout
	se.SetDTLSConnectContextMaker(func() (context.Context, func()) {
		return context.WithTimeout(context.Background(), dtlsTimeout)
	})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.BufferFactory = newStreamBuffer // bounded SRTP/SRTCP read buffers (buffers.go)
	if len(cfg.PublicIPs) > 0 {
		se.SetNAT1To1IPs(cfg.PublicIPs, webrtc.ICECandidateTypeHost)
	}
	if cfg.Net != nil {
		se.SetNet(cfg.Net)
	}
	return se
}

// Payload types match Chrome's usual choices so that SDP stays readable.
const (
	ptOpus   = 111
	ptVP8    = 96
	ptVP8RTX = 97
)

func newMediaEngine() (*webrtc.MediaEngine, error) {
	m := &webrtc.MediaEngine{}
	videoFB := []webrtc.RTCPFeedback{
		{Type: "goog-remb"}, {Type: "ccm", Parameter: "fir"},
		{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "transport-cc"},
	}
	codecs := []struct {
		c    webrtc.RTPCodecParameters
		kind webrtc.RTPCodecType
	}{
		{webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{
				MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
				SDPFmtpLine: "minptime=10;useinbandfec=1", RTCPFeedback: []webrtc.RTCPFeedback{{Type: "transport-cc"}},
			},
			PayloadType: ptOpus,
		}, webrtc.RTPCodecTypeAudio},
		{webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: videoFB},
			PayloadType:        ptVP8,
		}, webrtc.RTPCodecTypeVideo},
		{webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeRTX, ClockRate: 90000, SDPFmtpLine: fmt.Sprintf("apt=%d", ptVP8)},
			PayloadType:        ptVP8RTX,
		}, webrtc.RTPCodecTypeVideo},
	}
	for _, c := range codecs {
		if err := m.RegisterCodec(c.c, c.kind); err != nil {
			return nil, fmt.Errorf("sfu: register %s: %w", c.c.MimeType, err)
		}
	}
	// Feedback and header extensions the interceptors (newRegistry) need.
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack"}, webrtc.RTPCodecTypeVideo)
	m.RegisterFeedback(webrtc.RTCPFeedback{Type: "nack", Parameter: "pli"}, webrtc.RTPCodecTypeVideo)
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		m.RegisterFeedback(webrtc.RTCPFeedback{Type: webrtc.TypeRTCPFBTransportCC}, kind)
		if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: transportCCURI}, kind); err != nil {
			return nil, fmt.Errorf("sfu: register transport-cc: %w", err)
		}
	}
	return m, nil
}

// NACK tuning measured on this project (see ../shared/NOTES.md): a short
// interval and a per-packet limit keep loss repair fast without NACK storms
// for packets already recovered over RTX.
//
// The NACK responder (nackresp.go) keeps the packets sent to a subscriber
// in a ring per video track that starts at 128 KiB (0.55 s at 1.7 Mbit/s:
// from 32 KiB, 150 ms, TestLossRepairFivePercent failed 6 of 8 runs with
// repairs of 0.5-1.2 s while the rings grew) and grows (by 1.25-2×
// a step) while a lap of it takes less than nackRepairWindow, towards 1.25
// × nackRepairWindow at the rate of that lap (128-256 KiB at 1.2 Mbit/s
// with keyframe bursts), at most 640 KiB (2 s at the prober's 2.5 Mbit/s
// ceiling). One second covers five NACK retries at a
// 200 ms round trip. Its index holds 1,024 packets (2 s of 300-byte
// packets). pion's responder held 512 packets in ~1.8 KiB pooled buffers
// each; a fixed 640 KiB ring cost 1.25 MiB per call.
const (
	nackInterval     = 20 * time.Millisecond
	nackMaxPerPacket = 5
	nackRingMin      = 128 << 10
	nackRingMax      = 640 << 10
	nackRepairWindow = time.Second
	nackRingPackets  = 1024
	srtpReplayWindow = 1024
	// srtcpReplayWindow is pion's default for SRTCP (its SessionSRTCP's),
	// which the RTCP fast path's context keeps too (rtcpfast.go).
	srtcpReplayWindow = 64
	// srtpMaxIndex is the largest SRTP packet index (a 32-bit rollover
	// counter and a 16-bit sequence number), as pion's contexts bound it.
	srtpMaxIndex = 1<<48 - 1
)

// newRegistry builds the interceptor chain of one PeerConnection (the
// MediaEngine offers the feedback and extensions it needs: newMediaEngine).
// Order matters: the last registered is the outermost on the write path
// (it sees a packet first). The transport-cc extension must be on a packet
// before the estimator sees it, and the NACK responder's retransmissions
// (on the RTX SSRC) must not pass through the estimator, which knows media
// SSRCs only. The send fast path goes first, next to pion's writer, to see
// every packet sent; then the repair counters, to see every NACK and
// retransmission.
//
// The NACK responder answers subscribers' NACKs from a send buffer; NACKs
// to publishers come from the upTracks (nackgen.go), not from pion's
// generator. Transport-wide congestion control feedback (the remote
// senders' estimates depend on it) is our own (twccfb.go), as
// webrtc.ConfigureTWCCSender does with pion's interceptor.
func newRegistry(est *estimators, rep *repairCounters, h *peerHooks, tx *fastTable, rtcpFast bool) (*interceptor.Registry, error) {
	reg := &interceptor.Registry{}
	if rtcpFast {
		// First, and the catcher last: the RTCP fast path calls the
		// chain in between.
		reg.Add(rtcpInjectorFactory{})
	}
	if tx != nil {
		// First: its writer wraps pion's and sees every packet sent.
		reg.Add(txSenderFactory{hooks: h, tab: tx})
	}
	reg.Add(rep)
	lim := newResendLimit()
	if h != nil {
		h.resend = lim
	}
	reg.Add(nackResponderFactory{ringSize{minBytes: nackRingMin, maxBytes: nackRingMax, ringPackets: nackRingPackets, window: nackRepairWindow}, lim})
	// pion's sender reports for our outgoing streams. Receiver reports
	// for the publishers' streams are our own (rxreport.go), counted where
	// every received packet passes.
	sender, err := report.NewSenderInterceptor()
	if err != nil {
		return nil, fmt.Errorf("sfu: interceptors: %w", err)
	}
	reg.Add(sender)
	reg.Add(twccFeedbackFactory{hooks: h})
	if err := registerCongestionControl(reg, est, lim); err != nil {
		return nil, fmt.Errorf("sfu: interceptors: %w", err)
	}
	reg.Add(twccSeqFactory{}) // extension registered by newMediaEngine
	if rtcpFast {
		reg.Add(rtcpCatcherFactory{hooks: h})
	}
	return reg, nil
}

// ErrClosed is returned by operations on a closed call or participant.
var ErrClosed = errors.New("sfu: closed")
