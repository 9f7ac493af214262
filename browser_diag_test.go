package main

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"videochat/internal/browsertest"
	"videochat/internal/netns"
)

type diagResult struct {
	Result string `json:"result"`
	RTT    *int   `json:"rtt"`
	Text   string `json:"text"`
	Detail string `json:"detail"`
}

// runDiag opens /diag in Chromium inside ns (with block applied after the
// app starts) and returns its results once it is done.
func runDiag(t *testing.T, block func(ns *netns.NS, port int)) map[string]diagResult {
	t.Helper()
	ns := netns.New(t)
	cert, key := writeSelfSigned(t)
	app := startApp(t, func(c *Config) {
		c.Addr, c.TURNAddr, c.TURNTLSAddr, c.TURNSecret = ":0", ":0", ":0", "s3cret"
		c.TLSCert, c.TLSKey = cert, key
		c.ICETCP = true
	})
	port := app.ln.Addr().(*net.TCPAddr).Port
	if block != nil {
		block(ns, port)
	}
	chromium, err := browsertest.Path()
	if err != nil {
		t.Fatal(err)
	}
	b := browsertest.Launch(t,
		chromedp.ExecPath(ns.Wrapper(chromium)),
		chromedp.Flag("remote-debugging-port", fmt.Sprint(ns.ForwardLoopback())),
		chromedp.Flag("ignore-certificate-errors", true))
	tab := b.Open(t, fmt.Sprintf("https://%s/diag", net.JoinHostPort(ns.HostIP, fmt.Sprint(port))))
	// Every test ends within its 8 s timeout (blocked ones take all of it).
	tab.WaitFor(`window.diag && window.diag.done`, 30*time.Second)
	var res map[string]diagResult
	tab.Eval(`window.diag.results`, &res)
	var summary string
	tab.Eval(`document.getElementById('summary').textContent`, &summary)
	for name, r := range res {
		t.Logf("%-9s %-8s %s (%s)", name, r.Result, r.Text, r.Detail)
	}
	t.Logf("summary: %s", summary)
	return res
}

func checkDiag(t *testing.T, res map[string]diagResult, want map[string]string) {
	t.Helper()
	for name, w := range want {
		got := res[name].Result
		if got == "slow" { // a loaded test machine; the path works
			got = "works"
		}
		if got != w {
			t.Errorf("%s: %q (%s), want %s", name, res[name].Result, res[name].Text, w)
		}
		if w == "works" && (res[name].RTT == nil || *res[name].RTT < 0) {
			t.Errorf("%s: no round-trip time", name)
		}
	}
}

// TestBrowserDiagOpenNetwork: nothing blocked, every transport works.
func TestBrowserDiagOpenNetwork(t *testing.T) {
	res := runDiag(t, nil)
	checkDiag(t, res, map[string]string{"websocket": "works", "udp": "works", "icetcp": "works",
		"turn-udp": "works", "turn-tcp": "works", "turn-tls": "works"})
}

// TestBrowserDiagUDPBlocked: a firewall dropping all UDP: the page says
// UDP and TURN/UDP are blocked and the TCP paths work.
func TestBrowserDiagUDPBlocked(t *testing.T) {
	res := runDiag(t, func(ns *netns.NS, _ int) { ns.BlockUDP() })
	checkDiag(t, res, map[string]string{"websocket": "works", "udp": "blocked", "icetcp": "works",
		"turn-udp": "blocked", "turn-tcp": "works", "turn-tls": "works"})
}
