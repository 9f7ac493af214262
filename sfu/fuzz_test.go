package sfu

import (
	"strings"
	"testing"

	"github.com/pion/webrtc/v4"
)

// nopSignaler drops everything the SFU says (the fuzz target looks only
// at what the SFU does with its input).
type nopSignaler struct{}

func (nopSignaler) SendDescription(webrtc.SessionDescription) {}
func (nopSignaler) SendCandidate(webrtc.ICECandidateInit)     {}
func (nopSignaler) Interrupted()                              {}
func (nopSignaler) Restored()                                 {}
func (nopSignaler) Failed(error)                              {}

// pionOffer is a real offer (audio and video, as rtctest peers send).
func pionOffer(tb testing.TB) string {
	tb.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = pc.Close() }()
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		if _, err := pc.AddTransceiverFromKind(k); err != nil {
			tb.Fatal(err)
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		tb.Fatal(err)
	}
	return offer.SDP
}

// FuzzSDPAndCandidates: a client's description and candidates, as the
// signaling hands them over (it has already bounded their size: 64 KiB
// and 16 m= sections), never panic the SFU, and the call still closes.
// Input: the description (an offer, or an answer to the SFU's offer when
// asAnswer) and candidate lines, one per line.
func FuzzSDPAndCandidates(f *testing.F) {
	offer := pionOffer(f)
	cand := "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host"
	f.Add(offer, cand, false)
	f.Add(offer, cand+"\ncandidate:2 1 tcp 1 ::1 9 typ host tcptype passive\n", true)
	f.Add(strings.Replace(offer, "a=ice-ufrag:", "a=ice-ufrag:x", 1), "candidate:x\n\n", false)
	f.Add("v=0\r\n", "candidate:1 1 udp 1 999.1.1.1 70000 typ relay raddr x rport y", false)
	f.Add(offer[:len(offer)/2], "a=candidate:1 1 UDP 1 1.2.3.4 5 typ srflx", false)
	f.Add("", "", true)
	s, err := New(Config{IncludeLoopback: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = s.Close() })
	f.Fuzz(func(t *testing.T, sdp, cands string, asAnswer bool) {
		if len(sdp) > 64<<10 || strings.Count(sdp, "\nm=") > 16 || len(cands) > 64<<10 {
			return // the signaling refuses these before the SFU sees them
		}
		call := s.NewCall("fuzz")
		defer call.Close()
		p, err := call.Join("fuzz", nopSignaler{})
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(cands, "\n")
		if len(lines) > 64 {
			lines = lines[:64]
		}
		for _, l := range lines[:len(lines)/2] { // some before the description
			_ = p.AddCandidate(webrtc.ICECandidateInit{Candidate: l})
		}
		if asAnswer {
			if p.SendOffer() == nil {
				_ = p.HandleAnswer(sdp)
			}
		} else {
			_ = p.HandleOffer(sdp)
		}
		for _, l := range lines[len(lines)/2:] {
			_ = p.AddCandidate(webrtc.ICECandidateInit{Candidate: l})
		}
	})
}
