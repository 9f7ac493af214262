package sfu

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/pion/interceptor/pkg/cc"
	"github.com/pion/webrtc/v4"
)

// maxEarlyCandidates bounds the candidates held before a remote description.
const maxEarlyCandidates = 64

// Participant is one user's PeerConnection inside a call.
type Participant struct {
	sfu    *SFU
	call   *Call
	name   string
	sig    Signaler
	pc     *webrtc.PeerConnection
	down   map[webrtc.RTPCodecType]*downTrack // fixed at creation
	bwe    cc.BandwidthEstimator              // this participant's downlink; may be nil
	repair *repairCounts                      // NACKs and retransmissions on the wire
	hooks  *peerHooks                         // per-PeerConnection handles (srtpkeys.go)
	fast   *fastPeer                          // the receive fast path; nil if off (rxfast_participant.go)

	negMu sync.Mutex // serialises offer/answer steps

	mu        sync.Mutex
	up        []*upTrack
	retired   Totals // of the tracks a restarted publisher replaced
	remoteSet bool
	ufrag     string                    // the remote description's ICE username fragment
	early     []webrtc.ICECandidateInit // remote candidates before their description
	descSent  bool
	ownQueue  []webrtc.ICECandidateInit // our candidates before our description went out
	closed    bool
	wg        sync.WaitGroup // RTCP readers, track read loops, the report loop
	rrDone    chan struct{}  // closed by closePC: ends runReports

	life      *lifecycle   // connection state, grace and connect timers
	log       *slog.Logger // with the call's and the participant's ids
	closeOnce sync.Once
}

func newParticipant(c *Call, name string, sig Signaler) (*Participant, error) {
	hooks := &peerHooks{}
	api, err := c.sfu.newPeerAPI(hooks)
	if err != nil {
		return nil, err
	}
	pc, err := api.NewPeerConnection(webrtc.Configuration{
		BundlePolicy:  webrtc.BundlePolicyMaxBundle,
		RTCPMuxPolicy: webrtc.RTCPMuxPolicyRequire,
	})
	if err != nil {
		return nil, fmt.Errorf("sfu: new peer connection: %w", err)
	}
	p := &Participant{sfu: c.sfu, call: c, name: name, sig: sig, pc: pc, hooks: hooks,
		down: map[webrtc.RTPCodecType]*downTrack{}, bwe: c.sfu.est.take(pc.ID()), repair: c.sfu.rep.take(pc.ID()),
		life: newLifecycle(sig, c.sfu.cfg), rrDone: make(chan struct{})}
	p.log = c.log.With("participant", name)
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		d := newDownTrack(kind, "videochat", p.bwe)
		sender, err := pc.AddTrack(d)
		if err != nil {
			_ = pc.Close()
			p.wg.Wait()
			return nil, fmt.Errorf("sfu: add %s track: %w", kind, err)
		}
		p.down[kind] = d
		p.wg.Add(1)
		go func() { defer p.wg.Done(); d.readRTCP(sender) }()
	}
	p.wg.Add(1)
	go func() { defer p.wg.Done(); p.runReports(p.rrDone, c.sfu.cfg.reportInterval) }()
	pc.OnICECandidate(p.onCandidate)
	pc.OnTrack(p.onTrack)
	pc.OnConnectionStateChange(p.onState)
	p.fastStart()
	// pion closes a PeerConnection whose DTLS handshake failed right after
	// reporting it failed: remember why, so the reason is not "closed".
	// Runs on pion's handshake goroutine under the transport's lock: only
	// record things here.
	pc.SCTP().Transport().OnStateChange(func(s webrtc.DTLSTransportState) {
		switch s { //nolint:exhaustive // the others change nothing here
		case webrtc.DTLSTransportStateFailed:
			p.life.markDTLSFailed()
		case webrtc.DTLSTransportStateConnected:
			hooks.keys.connected()
		}
	})
	c.sfu.track(p)
	return p, nil
}

// sessionKeys returns the SRTP master keys of the participant's
// PeerConnection, or nil: before its DTLS handshake completed, or if they
// cannot be known (the SFU ended up DTLS client, an unknown cipher suite or
// profile). They are set before pion reports the PeerConnection connected
// and never change afterwards (an ICE restart keeps the DTLS session).
func (p *Participant) sessionKeys() *sessionKeys { return p.hooks.keys.keys() }

// twccFeedback returns the PeerConnection's transport-wide congestion
// control feedback recorder (twccfb.go), or nil before pion built it.
func (p *Participant) twccFeedback() *twccFeedback { return p.hooks.twcc.Load() }

// Name returns the participant's name.
func (p *Participant) Name() string { return p.name }

// HandleOffer applies the client's offer and sends the server's answer. If
// the server's own offer is outstanding (glare), the server yields.
//
// An offer with new ICE credentials is an ICE restart: pion restarts its
// agent (fresh local credentials, candidates gathered anew) while the DTLS
// session and media tracks carry on. The new candidates are held until the
// answer carrying the new credentials has been sent.
func (p *Participant) HandleOffer(sdp string) error {
	if err := checkCodecWork("offer", sdp); err != nil {
		return err
	}
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if p.pc.SignalingState() == webrtc.SignalingStateHaveLocalOffer {
		if err := p.pc.SetLocalDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeRollback}); err != nil {
			return fmt.Errorf("rollback: %w", err)
		}
	}
	p.holdCandidates()
	if err := p.setRemote(webrtc.SDPTypeOffer, sdp); err != nil {
		p.releaseCandidates()
		return err
	}
	answer, err := p.pc.CreateAnswer(nil)
	if err != nil {
		p.releaseCandidates()
		return fmt.Errorf("create answer: %w", err)
	}
	if err := p.setLocalAndSend(answer); err != nil {
		p.releaseCandidates()
		return err
	}
	if p.unnegotiated() {
		// The client's offer had no room for some of our tracks (say, an
		// audio-only offer while the other side sends video): offer them.
		return p.offer()
	}
	return nil
}

// unnegotiated reports whether an outgoing track has no m-line yet.
func (p *Participant) unnegotiated() bool {
	for _, tr := range p.pc.GetTransceivers() {
		if s := tr.Sender(); s != nil && s.Track() != nil && tr.Mid() == "" {
			return true
		}
	}
	return false
}

// SendOffer makes a server offer (for the callee, or to renegotiate).
func (p *Participant) SendOffer() error {
	p.negMu.Lock()
	defer p.negMu.Unlock()
	return p.offer()
}

func (p *Participant) offer() error {
	offer, err := p.pc.CreateOffer(nil)
	if err != nil {
		return fmt.Errorf("create offer: %w", err)
	}
	return p.setLocalAndSend(offer)
}

// HandleAnswer applies the client's answer to the server's offer.
func (p *Participant) HandleAnswer(sdp string) error {
	if err := checkCodecWork("answer", sdp); err != nil {
		return err
	}
	p.negMu.Lock()
	defer p.negMu.Unlock()
	if p.pc.SignalingState() != webrtc.SignalingStateHaveLocalOffer {
		return errors.New("no offer is waiting for an answer")
	}
	return p.setRemote(webrtc.SDPTypeAnswer, sdp)
}

// AddCandidate adds a client candidate, holding it until the remote
// description arrives if necessary: the first one, or, for a candidate
// whose usernameFragment is not the current description's, the next one (a
// client restarting ICE may trickle before its offer arrives). An empty
// candidate ends the list.
func (p *Participant) AddCandidate(c webrtc.ICECandidateInit) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	if u := candidateUfrag(c); !p.remoteSet || (u != "" && u != p.ufrag) {
		defer p.mu.Unlock()
		if len(p.early) >= maxEarlyCandidates {
			return errors.New("too many candidates before the description")
		}
		p.early = append(p.early, c)
		return nil
	}
	p.mu.Unlock()
	return p.addCandidate(c)
}

func (p *Participant) addCandidate(c webrtc.ICECandidateInit) error {
	if c.Candidate == "" {
		return nil // end of candidates; ICE-lite needs nothing more
	}
	if err := p.pc.AddICECandidate(c); err != nil {
		return fmt.Errorf("bad candidate: %w", err)
	}
	return nil
}

func (p *Participant) setRemote(t webrtc.SDPType, sdp string) error {
	if err := p.pc.SetRemoteDescription(webrtc.SessionDescription{Type: t, SDP: sdp}); err != nil {
		return fmt.Errorf("bad %s: %w", t, err)
	}
	ufrag := remoteUfrag(sdp)
	p.mu.Lock()
	restart := p.ufrag != "" && ufrag != p.ufrag
	p.remoteSet = true
	p.ufrag = ufrag
	var early []webrtc.ICECandidateInit
	kept := p.early[:0]
	for _, c := range p.early {
		switch u := candidateUfrag(c); {
		case u == "" || u == ufrag:
			early = append(early, c)
		case len(kept) < maxEarlyCandidates/2:
			kept = append(kept, c) // perhaps for a description still to come
		}
	}
	p.early = kept
	p.mu.Unlock()
	if restart {
		p.fastUnregister() // until the new pair is selected
	}
	p.life.remoteSet()
	for _, c := range early {
		if err := p.addCandidate(c); err != nil {
			p.log.Debug("early candidate rejected", "err", err)
		}
	}
	return nil
}

// remoteUfrag returns the first a=ice-ufrag value of sdp ("" if none).
func remoteUfrag(sdp string) string {
	const attr = "a=ice-ufrag:"
	i := strings.Index(sdp, attr)
	if i < 0 {
		return ""
	}
	v := sdp[i+len(attr):]
	if j := strings.IndexAny(v, "\r\n"); j >= 0 {
		v = v[:j]
	}
	return strings.TrimSpace(v)
}

// candidateUfrag is the ICE username fragment a candidate names, in its
// usernameFragment field or its "ufrag" extension ("" if neither).
func candidateUfrag(c webrtc.ICECandidateInit) string {
	if c.UsernameFragment != nil && *c.UsernameFragment != "" {
		return *c.UsernameFragment
	}
	f := strings.Fields(c.Candidate)
	for i := 8; i+1 < len(f); i++ { // extensions follow "typ <type>" (fields 7 and 8)
		if f[i] == "ufrag" {
			return f[i+1]
		}
	}
	return ""
}

// holdCandidates queues the server's candidates until the next local
// description is sent: after an ICE restart they belong to it.
func (p *Participant) holdCandidates() {
	p.mu.Lock()
	p.descSent = false
	p.mu.Unlock()
}

// releaseCandidates sends what holdCandidates queued: after the
// description they belong to went out, or when no new description is
// going to be sent after all.
func (p *Participant) releaseCandidates() {
	p.mu.Lock()
	p.descSent = true
	queued := p.ownQueue
	p.ownQueue = nil
	p.mu.Unlock()
	for _, c := range queued {
		p.sig.SendCandidate(c)
	}
}

func (p *Participant) setLocalAndSend(d webrtc.SessionDescription) error {
	if err := p.pc.SetLocalDescription(d); err != nil {
		return fmt.Errorf("set local %s: %w", d.Type, err)
	}
	if ld := p.pc.LocalDescription(); ld != nil {
		d = *ld
	}
	p.sig.SendDescription(d)
	p.releaseCandidates()
	return nil
}

func (p *Participant) onCandidate(c *webrtc.ICECandidate) {
	if c == nil {
		return
	}
	init := c.ToJSON()
	p.mu.Lock()
	if !p.descSent {
		p.ownQueue = append(p.ownQueue, init)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	p.sig.SendCandidate(init)
}

func (p *Participant) onTrack(track *webrtc.TrackRemote, receiver *webrtc.RTPReceiver) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.wg.Add(2)
	p.mu.Unlock()
	defer p.wg.Done()

	p.log.Debug("track started",
		"kind", track.Kind().String(), "codec", track.Codec().MimeType, "ssrc", uint32(track.SSRC()))
	up := newUpTrack(p, track)
	go func() { defer p.wg.Done(); up.readRTCP(receiver) }()
	stopNACKs := make(chan struct{})
	if up.nack != nil {
		p.wg.Add(1)
		go func() { defer p.wg.Done(); up.runNACKs(stopNACKs) }()
	}
	if !p.call.publish(p, up) {
		// Left the call meanwhile: read until the PeerConnection
		// closes, forward to no one.
		p.mu.Lock()
		p.up = append(p.up, up)
		p.mu.Unlock()
	}
	if p.call.recorded() { // after publish: StartRecording sees up in p.up or we see its flag
		p.startRecording(up)
	}
	p.fastTrack(up, track)
	up.run()
	p.fastUntrack(up)
	close(stopNACKs)
	up.close()
}

// onState follows the PeerConnection's state. pion calls it on a new
// goroutine per change, so calls may arrive out of order: the lifecycle is
// given the state as it is now, not s.
func (p *Participant) onState(s webrtc.PeerConnectionState) {
	p.log.Debug("peer connection state", "state", s.String())
	p.fastState(p.pc.ConnectionState()) // s may be stale: pion calls on a goroutine per change
	if s == webrtc.PeerConnectionStateConnected {
		// Media can flow to this participant (again): ask for fresh
		// keyframes; and after an outage its own video resumes with a
		// keyframe at once, rather than when its subscribers' decoders
		// give up and send PLIs.
		for _, d := range p.down {
			d.requestKeyframe()
		}
		for _, up := range p.upTracks() {
			up.requestKeyframe()
		}
	}
	p.life.update(p.pc.ConnectionState(), p.dtlsFailed())
}

func (p *Participant) dtlsFailed() bool {
	if sctp := p.pc.SCTP(); sctp != nil {
		if t := sctp.Transport(); t != nil {
			return t.State() == webrtc.DTLSTransportStateFailed
		}
	}
	return false
}

// replaceUpTrack adds up to p's tracks and takes out (and returns) the
// earlier ones of the same kind, which it replaces.
func (p *Participant) replaceUpTrack(up *upTrack) (replaced []*upTrack) {
	p.mu.Lock()
	defer p.mu.Unlock()
	kept := make([]*upTrack, 0, len(p.up)+1)
	for _, u := range p.up {
		if u.kind == up.kind {
			replaced = append(replaced, u)
			p.retired.add(totalsOf(ParticipantStats{Up: []UpStats{u.snapshot()}}))
		} else {
			kept = append(kept, u)
		}
	}
	p.up = append(kept, up)
	return replaced
}

func (p *Participant) upTracks() []*upTrack {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*upTrack(nil), p.up...)
}

// Close leaves the call and releases the PeerConnection. When it returns,
// every goroutine the participant started has ended. Idempotent.
func (p *Participant) Close() {
	p.closeOnce.Do(func() {
		p.call.remove(p)
		p.closePC()
	})
}

func (p *Participant) closePC() {
	p.fastClose()
	p.life.close()
	p.mu.Lock()
	if !p.closed {
		close(p.rrDone)
	}
	p.closed = true
	ups := p.up
	p.mu.Unlock()
	for _, u := range ups {
		u.close()
	}
	if err := p.pc.Close(); err != nil {
		p.log.Debug("close peer connection", "err", err)
	}
	p.wg.Wait()
	p.sfu.retire(p)
}
