package main

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"videochat/internal/browsertest"
	"videochat/internal/netns"
)

// TestBrowserRelayOnlyCall forces both tabs to relay candidates (?relay=1):
// the call must go through the embedded TURN server.
func TestBrowserRelayOnlyCall(t *testing.T) {
	app := startAppWithTURN(t)
	b := browsertest.Launch(t)
	caller, callee := browserCallAs(t, b, app.URL()+"?relay=1", app.URL()+"?relay=1")
	for name, tab := range map[string]*browsertest.Tab{"caller": caller, "callee": callee} {
		s := stats(tab)
		if s.Local.Type != "relay" {
			t.Errorf("%s: selected local candidate is %q, want relay", name, s.Local.Type)
		}
		t.Logf("%s: local %s/%s via %s, remote %s:%d", name, s.Local.Type, s.Local.Relay, s.Local.Address, s.Remote.Address, s.Remote.Port)
	}
}

// TestBrowserCallWithUDPBlocked runs Chromium in a network namespace whose
// firewall drops every UDP datagram: the call must still complete, over
// TURN/TCP to the embedded server, which relays to the SFU.
func TestBrowserCallWithUDPBlocked(t *testing.T) {
	ns := netns.New(t) // before the app, so the SFU listens on the veth too
	ns.BlockUDP()
	app := startApp(t, func(c *Config) { c.Addr = ":0"; c.TURNAddr = ":0" })
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
	caller, callee := browserCall(t, b, url)
	for name, tab := range map[string]*browsertest.Tab{"caller": caller, "callee": callee} {
		s := stats(tab)
		if s.Local.Type != "relay" || s.Local.Relay != "tcp" {
			t.Errorf("%s: selected local candidate %+v, want relay over tcp", name, s.Local)
		}
	}
}
