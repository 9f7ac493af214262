package main

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"videochat/internal/browsertest"
	"videochat/internal/netns"
)

// nsBrowser starts the app and a Chromium that lives in ns, and returns the
// page URL the browser must use (the host's side of the veth).
func nsBrowser(t testing.TB, ns *netns.NS, mod func(*Config)) (*App, *browsertest.Browser, string) {
	t.Helper()
	app := startApp(t, func(c *Config) {
		c.Addr, c.TURNAddr = ":0", ":0"
		if mod != nil {
			mod(c)
		}
	})
	url := fmt.Sprintf("http://%s/", net.JoinHostPort(ns.HostIP, fmt.Sprint(app.ln.Addr().(*net.TCPAddr).Port)))
	chromium, err := browsertest.Path()
	if err != nil {
		t.Fatal(err)
	}
	b := browsertest.Launch(t,
		chromedp.ExecPath(ns.Wrapper(chromium)),
		// DevTools listens on the namespace's loopback; reach it from here.
		chromedp.Flag("remote-debugging-port", fmt.Sprint(ns.ForwardLoopback())),
		chromedp.Flag("unsafely-treat-insecure-origin-as-secure", strings.TrimSuffix(url, "/")))
	return app, b, url
}

// TestBrowserCallUnderLoss drops 5 % of UDP at random on every hop (both
// tabs sit behind a lossy firewall, so caller→server and server→callee each
// lose 5 %) and holds a 20 s call: loss repair must keep the video from
// freezing.
func TestBrowserCallUnderLoss(t *testing.T) {
	ns := netns.New(t)
	ns.UDPLoss(5)
	app, b, url := nsBrowser(t, ns, nil)
	caller, callee := browserCall(t, b, url)
	first := stats(caller)
	t.Logf("under 5%% loss: call to first remote frame %.0f ms (caller)", first.FirstRemoteFrm-first.CallClicked)

	for i := 0; i < 10; i++ {
		time.Sleep(2 * time.Second)
		for _, c := range app.sfu.Stats() {
			for _, p := range c {
				for _, u := range p.Up {
					if u.Kind == "video" {
						t.Logf("%s: downlink estimate %d, video up %d pkts, REMB %d, lost %d recovered %d", p.Name, p.EstimatedBitrate, u.Packets, u.REMB, u.Lost, u.Recovered)
					}
				}
			}
		}
	}
	for name, tab := range map[string]*browsertest.Tab{"caller": caller, "callee": callee} {
		s := stats(tab)
		t.Logf("%s: %d frames, freezes %d totalling %.2f s, video packets %d lost %d, NACKs %d, PLIs %d",
			name, s.FramesDecoded, s.FreezeCount, s.FreezeSeconds, s.VideoPackets, s.PacketsLost, s.NACKs, s.PLIs)
		if s.FreezeSeconds > 0.5 {
			t.Errorf("%s: video froze for %.2f s in total, want at most 0.5 s", name, s.FreezeSeconds)
		}
		if s.FramesDecoded < 300 {
			t.Errorf("%s: only %d frames decoded in a 20 s call", name, s.FramesDecoded)
		}
	}
}
