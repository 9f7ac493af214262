package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

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

		// The page's quality view says so in words. Chromium picks TURN over
		// UDP or over TCP (the one port offers both): either is a relay.
		want := "relayed over " + strings.ToUpper(s.Local.Relay)
		tab.WaitFor(fmt.Sprintf(`window.app.quality && window.app.quality.path === %q`, want), 5*time.Second)
	}
}

// TestBrowserCallWithUDPBlocked runs Chromium in a network namespace whose
// firewall drops every UDP datagram: the call must still complete, over
// TURN/TCP to the embedded server, which relays to the SFU.
func TestBrowserCallWithUDPBlocked(t *testing.T) {
	ns := netns.New(t) // before the app, so the SFU listens on the veth too
	ns.BlockUDP()
	_, b, url := nsBrowser(t, ns, nil)
	caller, callee := browserCall(t, b, url)
	for name, tab := range map[string]*browsertest.Tab{"caller": caller, "callee": callee} {
		s := stats(tab)
		if s.Local.Type != "relay" || s.Local.Relay != "tcp" {
			t.Errorf("%s: selected local candidate %+v, want relay over tcp", name, s.Local)
		}
		tab.WaitFor(`window.app.quality && window.app.quality.path === 'relayed over TCP'`, 5*time.Second)
	}
}
