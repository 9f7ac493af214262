package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"videochat/internal/browsertest"
	"videochat/internal/certs"
	"videochat/internal/netns"
)

// printedHTTPS is what printHTTPS told the person at the console.
type printedHTTPS struct {
	URLs        []string
	Fingerprint string
}

var fingerprintRE = regexp.MustCompile(`(?m)^\s+((?:[0-9A-F]{2}:){31}[0-9A-F]{2})$`)

func parsePrinted(t *testing.T, out string) printedHTTPS {
	t.Helper()
	var p printedHTTPS
	for _, line := range strings.Split(out, "\n") {
		if f := strings.TrimSpace(line); strings.HasPrefix(f, "https://") {
			p.URLs = append(p.URLs, f)
		}
	}
	if m := fingerprintRE.FindStringSubmatch(out); m != nil {
		p.Fingerprint = m[1]
	}
	if len(p.URLs) == 0 || p.Fingerprint == "" {
		t.Fatalf("no URLs or fingerprint in what the server printed:\n%s", out)
	}
	return p
}

// noEnv is an empty environment for parseConfig.
func noEnv(string) (string, bool) { return "", false }

// TestBrowserSecondDeviceOverLANHTTPS is "a phone on the same Wi-Fi": a
// default start (only ports made ephemeral and the state directory a temp
// one) prints HTTPS URLs and a fingerprint; Chromium in its own network
// namespace (its own address) opens the URL for the address it can reach,
// after the test checked that the certificate served there covers that
// address and has the printed fingerprint, and calls a tab on the host,
// which uses plain http://localhost. Frames are decoded both ways.
func TestBrowserSecondDeviceOverLANHTTPS(t *testing.T) {
	ns := netns.New(t) // before the app: the certificate must cover the host's end of the veth
	cfg, err := parseConfig([]string{"-state-dir", t.TempDir(), "-addr", ":0", "-https-addr", ":0", "-udp-port", "0", "-turn-addr", ":0", "-turn-tls-addr", ":0"}, noEnv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	app := startApp(t, func(c *Config) { *c = cfg; c.IncludeLoopback = true })
	var out bytes.Buffer
	app.printHTTPS(&out)
	t.Logf("printed:\n%s", out.String())
	printed := parsePrinted(t, out.String())

	// The URL a device on the veth's network opens.
	var lanURL string
	for _, u := range printed.URLs {
		if p, err := url.Parse(u); err == nil && p.Hostname() == ns.HostIP {
			lanURL = u
		}
	}
	if lanURL == "" {
		t.Fatalf("no printed URL for %s among %v", ns.HostIP, printed.URLs)
	}
	leaf := servedCertificate(t, ns, lanURL)
	if fp := certs.Fingerprint(leaf.Raw); fp != printed.Fingerprint {
		t.Fatalf("served certificate's fingerprint %s, printed %s", fp, printed.Fingerprint)
	}
	if err := leaf.VerifyHostname(ns.HostIP); err != nil {
		t.Fatalf("served certificate does not cover %s: %v", ns.HostIP, err)
	}
	// Chromium accepts this key only (not any certificate), as a person
	// who checked the fingerprint does.
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)

	chromium, err := browsertest.Path()
	if err != nil {
		t.Fatal(err)
	}
	device := browsertest.Launch(t,
		chromedp.ExecPath(ns.Wrapper(chromium)),
		chromedp.Flag("remote-debugging-port", fmt.Sprint(ns.ForwardLoopback())),
		chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(spki[:])))
	host := browsertest.Launch(t)

	caller := signIn(t, device, lanURL, "phone")
	if !strings.HasPrefix(lanURL, "https://") {
		t.Fatalf("LAN URL %s", lanURL)
	}
	var secure bool
	caller.Eval(`window.isSecureContext && location.protocol === 'https:'`, &secure)
	if !secure {
		t.Fatal("the device's page is not a secure HTTPS context")
	}
	callee := signIn(t, host, app.URL(), "laptop")
	caller.WaitFor(`document.querySelector('#users [data-name="laptop"]')`, 10*time.Second)
	autoAccept(callee)
	caller.Eval(`(() => { document.querySelector('#users [data-name="laptop"]').click(); return true; })()`, new(bool))
	for _, tab := range []*browsertest.Tab{caller, callee} {
		tab.WaitFor(`window.app.state === 'connected'`, 15*time.Second)
	}
	for name, tab := range map[string]*browsertest.Tab{"device": caller, "host": callee} {
		s := waitDecoding(t, tab, 30)
		t.Logf("%s: %d frames decoded, %d audio packets; local %s %s, remote %s:%d", name, s.FramesDecoded, s.AudioPackets, s.Local.Type, s.Local.Address, s.Remote.Address, s.Remote.Port)
	}
	if s := stats(caller); s.Local.Address != ns.NSIP {
		t.Errorf("the device's media leaves from %s, want its own address %s", s.Local.Address, ns.NSIP)
	}
}

// servedCertificate connects from inside ns to the URL's address and
// returns the certificate the server presents there.
func servedCertificate(t *testing.T, ns *netns.NS, rawURL string) *x509.Certificate {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := ns.Dial("tcp", u.Host)
	if err != nil {
		t.Fatalf("dial %s from the namespace: %v", u.Host, err)
	}
	defer raw.Close()
	_ = raw.SetDeadline(time.Now().Add(10 * time.Second))
	// Verified by hand below, against the printed fingerprint.
	conn := tls.Client(raw, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // the test compares the fingerprint
	if err := conn.Handshake(); err != nil {
		t.Fatalf("TLS handshake with %s: %v", u.Host, err)
	}
	chain := conn.ConnectionState().PeerCertificates
	if len(chain) == 0 {
		t.Fatal("no certificate served")
	}
	_ = net.Conn(conn).Close()
	return chain[0]
}
