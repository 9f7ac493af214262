package sfu

import (
	"errors"
	"net/netip"

	"github.com/pion/webrtc/v4"
)

// How a participant joins the receive fast path (rxfast.go): its
// PeerConnection's remote address is registered from the selected
// candidate pair once the SRTP keys are known (DTLS connected), moved when
// the pair changes, and removed on an ICE restart (until the new pair is
// selected), when the connection failed or closed, and at close (a
// disconnected peer stays: its media may come back from the same
// address). Its incoming tracks are registered (media SSRC, and the RTX
// SSRC the client's description declares) when their read loop starts,
// and removed when it ends.

// fastStart hooks p into the fast path (if the SFU has it).
func (p *Participant) fastStart() {
	if p.sfu.fast == nil {
		return
	}
	p.fast = newFastPeer(p.sfu.fast)
	if !p.sfu.cfg.PionRTCP {
		p.fast.rtcp = &rtcpTargets{chain: p.hooks.rtcp.Load, down: []*downTrack{p.down[webrtc.RTPCodecTypeAudio], p.down[webrtc.RTPCodecTypeVideo]}}
	}
	p.pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(func(*webrtc.ICECandidatePair) {
		p.fastRegister()
	})
}

// fastRegister registers p under the remote address of the selected
// candidate pair once its keys are known; without a usable pair it
// unregisters p. Callers race (pion calls back on its own goroutines):
// each registers the pair selected when it looks, and looks again after,
// so the last one to look leaves the pair selected then.
func (p *Participant) fastRegister() {
	if p.fast == nil {
		return
	}
	k := p.sessionKeys()
	if k == nil {
		return // not yet (or never: p stays on pion's path)
	}
	var twcc arrivalRecorder
	if t := p.twccFeedback(); t != nil {
		twcc = t
	}
	if err := p.fast.setKeys(k.profile, k.remoteKey, k.remoteSalt, twcc); err != nil {
		p.log.Debug("receive fast path: no SRTP context", "err", err)
		return
	}
	if tx := p.hooks.tx.Load(); tx != nil {
		tx.enable(k, p.fast)
	}
	ice := p.pc.SCTP().Transport().ICETransport()
	pair, _ := ice.GetSelectedCandidatePair()
	addr, ok := pairRemote(pair)
	for range 4 {
		if !ok {
			p.fast.unregister()
		} else if err := p.fast.register(addr); errors.Is(err, errFastTaken) {
			p.log.Debug("receive fast path: address taken", "addr", addr.String())
		}
		now, _ := ice.GetSelectedCandidatePair()
		again, stillOK := pairRemote(now)
		if again == addr && stillOK == ok {
			return
		}
		addr, ok = again, stillOK
	}
}

// pairRemote is the remote address of a UDP candidate pair.
func pairRemote(pair *webrtc.ICECandidatePair) (netip.AddrPort, bool) {
	if pair == nil || pair.Remote == nil || pair.Remote.Protocol != webrtc.ICEProtocolUDP {
		return netip.AddrPort{}, false
	}
	ip, err := netip.ParseAddr(pair.Remote.Address)
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ip, pair.Remote.Port), true
}

// fastState follows the connection state.
func (p *Participant) fastState(s webrtc.PeerConnectionState) {
	if p.fast == nil {
		return
	}
	switch s { //nolint:exhaustive // the others change nothing
	case webrtc.PeerConnectionStateConnected:
		p.fastRegister()
	case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
		p.fast.unregister()
	}
}

// fastUnregister takes p off the fast path until the next selected pair
// (an ICE restart).
func (p *Participant) fastUnregister() {
	if p.fast != nil {
		p.fast.unregister()
	}
}

// fastTrack registers up's streams; call it when its read loop starts.
func (p *Participant) fastTrack(up *upTrack, track *webrtc.TrackRemote) {
	if p.fast == nil {
		return
	}
	ssrc := uint32(track.SSRC())
	p.fast.addStream(&fastStream{ssrc: ssrc, up: up})
	if rtx := uint32(track.RtxSSRC()); rtx != 0 {
		p.fast.addStream(&fastStream{ssrc: rtx, up: up, rtx: true, media: ssrc, pt: uint8(track.PayloadType())})
	}
}

// fastUntrack unregisters up's streams; its read loop has ended.
func (p *Participant) fastUntrack(up *upTrack) {
	if p.fast != nil {
		p.fast.removeStreams(func(s *fastStream) bool { return s.up == up })
	}
}

// fastClose takes p off the fast path for good.
func (p *Participant) fastClose() {
	if p.fast != nil {
		p.fast.close()
	}
}
