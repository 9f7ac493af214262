package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"videochat/internal/certs"
	"videochat/internal/netns"
)

func TestConfigHTTPS(t *testing.T) {
	cfg, err := parseWith(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTPSAddr != ":9443" || cfg.ACMEHTTPAddr != ":80" || len(cfg.ACMEDomains) != 0 {
		t.Errorf("defaults: %+v", cfg.HTTPS)
	}
	if want := defaultStateDir(); cfg.StateDir != want || (want != "" && !strings.HasSuffix(want, "videochat")) {
		t.Errorf("state dir %q, want %q ending in videochat", cfg.StateDir, want)
	}
	cfg, err = parseWith([]string{"-acme-domain", "a.example.org, b.example.org", "-acme-email", "ops@example.org"},
		map[string]string{"VIDEOCHAT_ACME_DIR": "https://ca.internal/dir", "VIDEOCHAT_STATE_DIR": "/var/lib/videochat"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.ACMEDomains, []string{"a.example.org", "b.example.org"}) || cfg.ACMEEmail != "ops@example.org" ||
		cfg.ACMEDir != "https://ca.internal/dir" || cfg.StateDir != "/var/lib/videochat" {
		t.Errorf("acme: %+v", cfg.HTTPS)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-acme-domain", "example.org", "-tls-cert", "c", "-tls-key", "k"}, "not both"},
		{[]string{"-acme-domain", "localhost"}, "not a fully qualified"},
		{[]string{"-acme-domain", "example.org:443"}, "not a fully qualified"},
		{[]string{"-acme-email", "a@b.c"}, "need -acme-domain"},
		{[]string{"-acme-ca-bundle", "ca.pem"}, "need -acme-domain"},
	} {
		if _, err := parseWith(tc.args, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.want)
		}
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestLANCertificateKeptAcrossRestarts: a second start serves the same
// certificate (the browser's exception still holds) and prints the same
// fingerprint; the first one said why it made one.
func TestLANCertificateKeptAcrossRestarts(t *testing.T) {
	state := t.TempDir()
	var fingerprints []string
	for i := 0; i < 2; i++ {
		app := startApp(t, func(c *Config) { c.HTTPSAddr, c.StateDir = "127.0.0.1:0", state })
		if app.https.lan.Generated != (i == 0) {
			t.Fatalf("start %d: generated %v (%s)", i, app.https.lan.Generated, app.https.lan.Reason)
		}
		var out bytes.Buffer
		app.printHTTPS(&out)
		if urls := app.LANURLs(); len(urls) != 1 || !strings.Contains(out.String(), urls[0]) {
			t.Fatalf("LAN URLs %v, printed:\n%s", urls, out.String())
		}
		conn, err := tls.Dial("tcp", app.https.lanLn.Addr().String(), &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // compared by fingerprint
		if err != nil {
			t.Fatal(err)
		}
		fp := certs.Fingerprint(conn.ConnectionState().PeerCertificates[0].Raw)
		_ = conn.Close()
		if !strings.Contains(out.String(), fp) {
			t.Fatalf("served %s, printed:\n%s", fp, out.String())
		}
		fingerprints = append(fingerprints, fp)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := app.Close(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
	}
	if fingerprints[0] != fingerprints[1] {
		t.Fatalf("restart changed the certificate: %v", fingerprints)
	}
	if st, err := os.Stat(filepath.Join(state, "tls")); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("state dir: %v %v", err, st)
	}
}

// TestTLSCertOverridesLAN: with -tls-cert, -addr serves HTTPS with it and
// no self-signed certificate is made or served.
func TestTLSCertOverridesLAN(t *testing.T) {
	cert, key := writeSelfSigned(t)
	state := t.TempDir()
	app := startApp(t, func(c *Config) { c.TLSCert, c.TLSKey, c.HTTPSAddr, c.StateDir = cert, key, "127.0.0.1:0", state })
	if app.https.lanLn != nil || app.LANURLs() != nil {
		t.Fatal("LAN listener open although -tls-cert is given")
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Fatalf("state dir written: %v", entries)
	}
	if !strings.HasPrefix(app.URL(), "https://") {
		t.Fatalf("URL %s", app.URL())
	}
}

func TestLANHTTPSNeedsStateDir(t *testing.T) {
	_, err := NewApp(Config{Addr: "127.0.0.1:0", HTTPS: HTTPS{HTTPSAddr: "127.0.0.1:0"}}, quietLog())
	if err == nil || !strings.Contains(err.Error(), "-state-dir") {
		t.Fatalf("error %v, want one naming -state-dir", err)
	}
	// A port already taken: a clear error, every port released.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	_, err = NewApp(Config{Addr: "127.0.0.1:0", HTTPS: HTTPS{HTTPSAddr: busy.Addr().String(), StateDir: t.TempDir()}}, quietLog())
	if err == nil || !strings.Contains(err.Error(), "-https-addr") {
		t.Fatalf("error %v, want one naming -https-addr", err)
	}
}

// TestLANServesCallPage: the LAN port serves the page and /healthz.
func TestLANServesCallPage(t *testing.T) {
	app := startApp(t, func(c *Config) { c.HTTPSAddr, c.StateDir = "127.0.0.1:0", t.TempDir() })
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // self-signed
	defer client.CloseIdleConnections()
	resp, err := client.Get(app.LANURLs()[0])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", app.LANURLs()[0], resp.Status)
	}
}

// TestLANWarnsOnNewAddress: an address added while the server runs (a
// veth here, another Wi-Fi on a laptop) is reported once, with the hint
// to restart; the certificate in use is not swapped under its clients.
func TestLANWarnsOnNewAddress(t *testing.T) {
	var logs syncBuffer
	cfg := Config{Addr: "127.0.0.1:0", IncludeLoopback: true,
		HTTPS: HTTPS{HTTPSAddr: "127.0.0.1:0", StateDir: t.TempDir(), lanCheckEvery: 20 * time.Millisecond}}
	app, err := NewApp(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- app.Serve() }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := app.Close(ctx); err != nil {
			t.Error(err)
		}
		if err := <-served; err != nil {
			t.Error(err)
		}
	}()
	fp := app.https.lan.Fingerprint
	ns := netns.New(t) // adds ns.HostIP to this host
	waitUntil(t, 5*time.Second, func() bool {
		return strings.Contains(logs.String(), "missing="+ns.HostIP)
	}, "no warning about the new address "+ns.HostIP)
	time.Sleep(100 * time.Millisecond) // a few more checks: still one warning
	if n := strings.Count(logs.String(), "missing="+ns.HostIP); n != 1 {
		t.Errorf("%d warnings for %s, want 1", n, ns.HostIP)
	}
	if app.https.lan.Fingerprint != fp {
		t.Error("certificate replaced while running")
	}
}

// TestLANCloseWithoutServe: an App closed without ever serving releases
// the LAN port.
func TestLANCloseWithoutServe(t *testing.T) {
	app, err := NewApp(Config{Addr: "127.0.0.1:0", IncludeLoopback: true,
		HTTPS: HTTPS{HTTPSAddr: "127.0.0.1:0", StateDir: t.TempDir()}}, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	addr := app.https.lanLn.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := app.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := app.Serve(); err != nil { // too late: returns at once
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("LAN port still held: %v", err)
	}
	ln.Close()
}
