package main

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
)

func startAppWithTURN(t *testing.T) *App {
	return startApp(t, func(c *Config) { c.TURNAddr = "127.0.0.1:0"; c.TURNSecret = "s3cret" })
}

// relayCall makes a call between two relay-only pion clients whose only ICE
// servers are the app's TURN URLs of one transport.
func relayCall(t *testing.T, app *App, transport string) {
	t.Helper()
	url := wsURLOf(app.URL(), "/ws")
	servers := onlyTransport(app.turn.ICEServers("x", "127.0.0.1"), transport)
	if len(servers) == 0 {
		t.Fatalf("no turn: URL for %s", transport)
	}
	opts := rtctest.Options{RelayOnly: true}
	alice := dialPeer(t, url, "alice", opts, servers...)
	bob := dialPeer(t, url, "bob", opts, servers...)
	alice.call("bob")
	alice.expect("answer")
	bob.expect("offer")
	alice.expect("accepted")
	defer alice.StartSending()()
	defer bob.StartSending()()
	for _, p := range []*wsPeer{alice, bob} {
		for _, k := range kinds {
			if err := p.WaitPackets(k, 50, 15*time.Second); err != nil {
				t.Fatalf("%s over TURN/%s: %v", p.name, transport, err)
			}
			if r := p.Received(k); r.Corrupt != 0 {
				t.Fatalf("%s: %d corrupt payloads", p.name, r.Corrupt)
			}
		}
		pair, err := p.PC.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil || pair == nil {
			t.Fatalf("%s: no selected pair: %v", p.name, err)
		}
		if pair.Local.Typ != webrtc.ICECandidateTypeRelay {
			t.Fatalf("%s: local candidate is %s, want relay", p.name, pair.Local.Typ)
		}
	}
	if n := app.turn.AllocationCount(); n < 2 {
		t.Fatalf("%d TURN allocations, want at least 2", n)
	}
}

func TestRelayOnlyCallOverTURNUDP(t *testing.T) { relayCall(t, startAppWithTURN(t), "udp") }
func TestRelayOnlyCallOverTURNTCP(t *testing.T) { relayCall(t, startAppWithTURN(t), "tcp") }

func TestLoginHandsOutTURNCredentials(t *testing.T) {
	app := startAppWithTURN(t)
	p := dialPeer(t, wsURLOf(app.URL(), "/ws"), "alice", rtctest.Options{})
	var urls []string
	var user string
	for _, s := range p.ice {
		urls = append(urls, s.URLs...)
		if s.Username != "" {
			user = s.Username
		}
	}
	all := strings.Join(urls, " ")
	for _, want := range []string{"stun:localhost:", "turn:localhost:", "transport=udp", "transport=tcp"} {
		if !strings.Contains(all, want) {
			t.Errorf("iceServers %v lack %q", urls, want)
		}
	}
	if !strings.HasSuffix(user, ":alice") {
		t.Errorf("TURN username %q is not <expiry>:alice", user)
	}
}

func TestSelfTestReportsTURN(t *testing.T) {
	app := startAppWithTURN(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(app.URL() + "healthz")
		if err != nil {
			t.Fatal(err)
		}
		var h struct {
			Status string            `json:"status"`
			TURN   map[string]string `json:"turn"`
		}
		err = json.NewDecoder(resp.Body).Decode(&h)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if h.TURN["udp"] == "ok" && h.TURN["tcp"] == "ok" && h.Status == "ok" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("healthz: %+v", h)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
