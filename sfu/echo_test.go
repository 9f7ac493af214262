package sfu

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pion/webrtc/v4"
)

func echoOffer(t *testing.T) (webrtc.SessionDescription, func()) {
	t.Helper()
	pc, err := webrtc.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.CreateDataChannel("x", nil); err != nil {
		t.Fatal(err)
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	return offer, func() { _ = pc.Close() }
}

// TestEchoLimitAndClose: at most maxEchoes diagnostic connections exist at
// once, a bad description is refused, and Close ends them all.
func TestEchoLimitAndClose(t *testing.T) {
	s, err := New(Config{IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	offer, done := echoOffer(t)
	defer done()
	for i := range maxEchoes {
		answer, err := s.Echo(context.Background(), offer)
		if err != nil {
			t.Fatalf("echo %d: %v", i, err)
		}
		if answer.Type != webrtc.SDPTypeAnswer {
			t.Fatalf("echo %d: %v", i, answer.Type)
		}
	}
	if _, err := s.Echo(context.Background(), offer); !errors.Is(err, ErrTooManyEchoes) {
		t.Fatalf("echo %d: %v, want ErrTooManyEchoes", maxEchoes+1, err)
	}
	s.est.m.Range(func(k, _ any) bool { t.Errorf("estimator of %v left behind", k); return true })
	s.rep.m.Range(func(k, _ any) bool { t.Errorf("repair counts of %v left behind", k); return true })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s.echo.mu.Lock()
	n := len(s.echo.pcs)
	s.echo.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d echo connections after Close", n)
	}

	s2, err := New(Config{IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if _, err := s2.Echo(context.Background(), webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: offer.SDP}); err == nil {
		t.Fatal("an answer was accepted as an offer")
	}
	if _, err := s2.Echo(context.Background(), webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: "v=0 garbage"}); err == nil {
		t.Fatal("garbage SDP accepted")
	}
	if _, err := s2.Echo(context.Background(), webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: codecBomb()}); err == nil ||
		!strings.Contains(err.Error(), "payload types") {
		t.Fatalf("codec bomb: %v, want a refusal naming payload types", err)
	}
	s2.echo.mu.Lock() // pion's state callbacks of the refused ones may still run
	n = len(s2.echo.pcs)
	s2.echo.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d echo connections left by refused offers", n)
	}
}
