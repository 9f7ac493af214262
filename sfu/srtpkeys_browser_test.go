package sfu

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"videochat/internal/browsertest"
)

// tabSignaler keeps what the SFU sends to a browser tab until the test
// hands it over.
type tabSignaler struct {
	mu    sync.Mutex
	descs []webrtc.SessionDescription
	cands []webrtc.ICECandidateInit
}

func (s *tabSignaler) SendDescription(d webrtc.SessionDescription) {
	s.mu.Lock()
	s.descs = append(s.descs, d)
	s.mu.Unlock()
}

func (s *tabSignaler) SendCandidate(c webrtc.ICECandidateInit) {
	s.mu.Lock()
	s.cands = append(s.cands, c)
	s.mu.Unlock()
}
func (s *tabSignaler) Interrupted()   {}
func (s *tabSignaler) Restored()      {}
func (s *tabSignaler) Failed(_ error) {}

func (s *tabSignaler) take() ([]webrtc.SessionDescription, []webrtc.ICECandidateInit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, c := s.descs, s.cands
	s.descs, s.cands = nil, nil
	return d, c
}

func jsString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// tabScript sets up window.pc with the fake camera and microphone and the
// helpers the test calls.
const tabScript = `(async () => {
  window.pc = new RTCPeerConnection();
  window.media = await navigator.mediaDevices.getUserMedia({audio: true, video: true});
  window.gathered = () => new Promise(res => {
    if (pc.iceGatheringState === 'complete') return res();
    pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') res(); });
    setTimeout(res, 3000);
  });
  window.offer = async () => {
    media.getTracks().forEach(tr => pc.addTrack(tr, media));
    await pc.setLocalDescription(await pc.createOffer());
    await gathered();
    return pc.localDescription.sdp;
  };
  window.answer = async (sdp) => {
    await pc.setRemoteDescription({type: 'offer', sdp});
    for (const tr of pc.getTransceivers()) {
      const track = media.getTracks().find(m => m.kind === tr.receiver.track.kind);
      if (track) { await tr.sender.replaceTrack(track); tr.direction = 'sendrecv'; }
    }
    await pc.setLocalDescription(await pc.createAnswer());
    await gathered();
    return pc.localDescription.sdp;
  };
  return true;
})()`

// TestBrowserSessionKeys: with Chromium on either side of the offer, the
// SFU is the DTLS server (Chromium accepts "a=setup:passive" in the SFU's
// answer and answers the SFU's offer "active") and the participant's keys
// decrypt and authenticate the SRTP Chromium sends, as it arrives at the
// SFU's media socket.
func TestBrowserSessionKeys(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("<!doctype html><title>keys</title>"))
	}))
	t.Cleanup(srv.Close)
	sfuNet := newTapNet(t)
	s := newTestSFUWith(t, Config{Net: sfuNet})
	b := browsertest.Launch(t)
	for _, browserOffers := range []bool{true, false} {
		name := map[bool]string{true: "browser-offers", false: "sfu-offers"}[browserOffers]
		t.Run(name, func(t *testing.T) {
			tab := b.Open(t, srv.URL)
			tab.Eval(tabScript, new(bool))
			sig := &tabSignaler{}
			call := s.NewCall(name)
			defer call.Close()
			p, err := call.Join("chromium", sig)
			if err != nil {
				t.Fatal(err)
			}
			sfuNet.takeSRTP() // the previous run's
			var clientSDP string
			if browserOffers {
				tab.Eval(`offer()`, &clientSDP)
				if err := p.HandleOffer(clientSDP); err != nil {
					t.Fatal(err)
				}
			} else if err := p.SendOffer(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(15 * time.Second)
			var dec int
			for dec < 20 {
				descs, cands := sig.take()
				for _, d := range descs {
					if d.Type == webrtc.SDPTypeOffer {
						tab.Eval(`answer(`+jsString(t, d.SDP)+`)`, &clientSDP)
						if err := p.HandleAnswer(clientSDP); err != nil {
							t.Fatal(err)
						}
					} else {
						tab.Eval(`pc.setRemoteDescription({type: 'answer', sdp: `+jsString(t, d.SDP)+`}).then(() => true)`, new(bool))
					}
				}
				for _, c := range cands {
					tab.Eval(`pc.addIceCandidate(`+jsString(t, c)+`).then(() => true)`, new(bool))
				}
				if k := p.sessionKeys(); k != nil {
					d, _ := decryptAll(t, sfuNet.takeSRTP(), k.remoteKey, k.remoteSalt, k.profile, nil)
					dec += d
				}
				if time.Now().After(deadline) {
					t.Fatalf("within 15 s: keys %v, %d packets decrypted", p.sessionKeys() != nil, dec)
				}
				time.Sleep(50 * time.Millisecond)
			}
			k := p.sessionKeys()
			t.Logf("profile %#04x: %d of Chromium's SRTP packets decrypted and authenticated", uint16(k.profile), dec)
			checkServerRole(t, &testClient{part: p})
		})
	}
}
