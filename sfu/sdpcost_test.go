package sfu

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

// codecBomb is an offer within the signaling's limits (64 KiB, 16 m=
// lines) whose codecs cost pion payload types × lines to parse: one video
// section of 2,000 payload types and ~2,900 rtcp-fb lines. Before
// checkCodecWork, applying it took 3.3 s of CPU (measured on the 2-core
// machine, pion/webrtc v4.2.20).
func codecBomb() string {
	var b strings.Builder
	b.WriteString("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n")
	pts := make([]string, 2000)
	for i := range pts {
		pts[i] = fmt.Sprint(96 + i%32)
	}
	b.WriteString("m=video 9 UDP/TLS/RTP/SAVPF " + strings.Join(pts, " ") + "\r\n")
	b.WriteString("c=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n" +
		"a=fingerprint:sha-256 00:11\r\na=setup:actpass\r\na=mid:0\r\na=sendrecv\r\na=rtcp-mux\r\n")
	for i := 0; i < 32; i++ {
		fmt.Fprintf(&b, "a=rtpmap:%d VP8/90000\r\n", 96+i)
	}
	for i := 0; b.Len() < 60000; i++ {
		fmt.Fprintf(&b, "a=rtcp-fb:%d nack\r\n", 96+i%32)
	}
	return b.String()
}

func TestCodecWork(t *testing.T) {
	chromium, err := os.ReadFile("testdata/chromium-offer.sdp") // Chromium 14x's audio+video offer
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, sdp string
		ok        bool
	}{
		{"chromium", string(chromium), true},
		{"pion", pionOffer(t), true},
		{"bomb", codecBomb(), false},
		{"empty", "", true},
		{"formats without lines", "m=video 9 X " + strings.Repeat("96 ", 20000), true},
		{"lines without formats", "m=video 9 X\r\n" + strings.Repeat("a=rtcp-fb:* nack\r\n", 3000), true},
		{"bare newlines", "m=video 9 X " + strings.Repeat("96 ", 300) + strings.Repeat("\r\r\n", 300), false},
	} {
		err := checkCodecWork("offer", tc.sdp)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// TestCodecBombRefused: the offer is refused before pion parses it, and
// quickly (it took 3.3 s; refusing takes well under a millisecond, 1 s is
// for a starved machine).
func TestCodecBombRefused(t *testing.T) {
	s, err := New(Config{IncludeLoopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = s.Close() }()
	call := s.NewCall("bomb")
	defer call.Close()
	p, err := call.Join("bomb", nopSignaler{})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	err = p.HandleOffer(codecBomb())
	if err == nil || !strings.Contains(err.Error(), "payload types") {
		t.Fatalf("HandleOffer: %v, want a refusal naming payload types", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("refusing took %v", d)
	}
	if err := p.HandleOffer(pionOffer(t)); err != nil {
		t.Fatalf("a real offer after the refused one: %v", err)
	}
}
