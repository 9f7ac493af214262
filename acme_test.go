package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"

	"videochat/signaling"
)

const acmeTestDomain = "videochat.test"

// pebble is a real ACME CA (Let's Encrypt's Pebble) run in this process:
// its directory on an HTTPS test server, its validation authority
// resolving names through a DNS server of the test and connecting to the
// ports it is given (real HTTP-01 and TLS-ALPN-01 validation, no
// PEBBLE_VA_ALWAYS_VALID).
type pebble struct {
	dirURL   string
	caBundle string         // PEM of the directory's HTTPS certificate
	roots    *x509.CertPool // Pebble's issuing root
	ca       *ca.CAImpl
	db       *db.MemoryStore
	srv      *httptest.Server
	ready    chan struct{}
	handler  http.Handler
	logger   *log.Logger
}

// startPebble starts the directory; validation starts with validate once
// the ports to validate against are known (requests wait until then).
func startPebble(t *testing.T) *pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")      // no random 0-5 s sleep before each validation
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0") // no random badNonce (the client retries them, but keep it deterministic)
	p := &pebble{ready: make(chan struct{}), db: db.NewMemoryStore()}
	p.logger = log.New(io.Discard, "", 0)
	if testing.Verbose() {
		p.logger = log.New(testWriter{t}, "pebble ", 0)
	}
	p.ca = ca.New(p.logger, p.db, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "default"}})
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-p.ready:
			p.handler.ServeHTTP(w, r)
		case <-r.Context().Done():
		}
	}))
	p.srv.StartTLS()
	t.Cleanup(p.srv.Close)
	p.dirURL = p.srv.URL + wfe.DirectoryPath
	p.caBundle = filepath.Join(t.TempDir(), "pebble-https.pem")
	if err := os.WriteFile(p.caBundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	p.roots = x509.NewCertPool()
	p.roots.AddCert(p.ca.GetRootCert(0).Cert)
	return p
}

// validate starts the validation authority against these ports of
// acmeTestDomain (which resolves to 127.0.0.1).
func (p *pebble) validate(t *testing.T, httpPort, tlsPort int) {
	t.Helper()
	resolver := startDNS(t, acmeTestDomain, net.IPv4(127, 0, 0, 1))
	v := va.New(p.logger, httpPort, tlsPort, false, resolver, p.db)
	w := wfe.New(p.logger, p.db, v, p.ca, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	p.handler = w.Handler()
	close(p.ready)
}

// startDNS answers A queries for name with ip (and nothing else), over
// TCP, which Pebble's validation authority uses.
func startDNS(t *testing.T, name string, ip net.IP) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, qq := range q.Question {
			if qq.Qtype == dns.TypeA && strings.EqualFold(qq.Name, dns.Fqdn(name)) {
				m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: qq.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5}, A: ip})
			}
		}
		_ = w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = srv.Shutdown(); <-done })
	return ln.Addr().String()
}

// closedPort is a TCP port nothing listens on (so one challenge type fails).
func closedPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	return port
}

// TestACMEFromPebble: with -acme-domain the server obtains a certificate
// from a real ACME CA and serves the call page, the WebSocket and TURN
// over TLS with it, verified by a client that trusts only the CA's root.
// One subtest can pass only by TLS-ALPN-01 on -addr (no HTTP-01 listener),
// the other only by HTTP-01 on -acme-http-addr (the CA's TLS-ALPN-01 port
// is closed, so autocert falls back).
func TestACMEFromPebble(t *testing.T) {
	for _, challenge := range []string{"tls-alpn-01", "http-01"} {
		t.Run(challenge, func(t *testing.T) {
			p := startPebble(t)
			state := t.TempDir()
			args := []string{"-state-dir", state, "-addr", "127.0.0.1:0", "-udp-port", "0",
				"-turn-addr", "127.0.0.1:0", "-turn-tls-addr", "127.0.0.1:0",
				"-acme-domain", acmeTestDomain, "-acme-email", "ops@" + acmeTestDomain,
				"-acme-dir", p.dirURL, "-acme-ca-bundle", p.caBundle, "-acme-http-addr", "127.0.0.1:0"}
			if challenge == "tls-alpn-01" {
				args = append(args, "-acme-http-addr", "")
			}
			cfg, err := parseConfig(args, noEnv, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			app := startApp(t, func(c *Config) { *c = cfg; c.IncludeLoopback = true })
			webPort := app.ln.Addr().(*net.TCPAddr).Port
			if challenge == "tls-alpn-01" {
				if app.https.acmeLn != nil {
					t.Fatal("HTTP-01 listener open although -acme-http-addr is empty")
				}
				p.validate(t, closedPort(t), webPort)
			} else {
				p.validate(t, app.https.acmeLn.Addr().(*net.TCPAddr).Port, closedPort(t))
			}

			// A browser-like client that trusts only Pebble's root, reaching
			// acmeTestDomain at the server's address.
			trust := &tls.Config{RootCAs: p.roots, ServerName: acmeTestDomain}
			dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, app.ln.Addr().String())
			}
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: trust, DialContext: dial}}
			defer client.CloseIdleConnections()
			pageURL := "https://" + net.JoinHostPort(acmeTestDomain, strconv.Itoa(webPort)) + "/"
			var resp *http.Response
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(200 * time.Millisecond) {
				if resp, err = client.Get(pageURL); err == nil || time.Now().After(deadline) {
					break
				}
			}
			if err != nil {
				t.Fatalf("GET %s with Pebble's root: %v", pageURL, err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			leaf := resp.TLS.PeerCertificates[0]
			t.Logf("%s: certificate for %v from %q after %v, valid until %s", challenge, leaf.DNSNames, leaf.Issuer.CommonName,
				time.Since(start).Round(time.Millisecond), leaf.NotAfter.Format(time.DateOnly))
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "login-btn") {
				t.Fatalf("call page: %s, %d bytes", resp.Status, len(body))
			}
			if resp.TLS.NegotiatedProtocol == "h2" {
				t.Error("HTTP/2 negotiated: the WebSocket upgrade needs HTTP/1.1")
			}

			// The WebSocket, and the turns: URL it hands out.
			d := websocket.Dialer{TLSClientConfig: trust, NetDialContext: dial}
			ws, _, err := d.Dial("wss://"+net.JoinHostPort(acmeTestDomain, strconv.Itoa(webPort))+"/ws", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			if err := ws.WriteJSON(signaling.Message{Type: "login", Name: "alice"}); err != nil {
				t.Fatal(err)
			}
			var reply signaling.Message
			if err := ws.ReadJSON(&reply); err != nil {
				t.Fatal(err)
			}
			var urls []string
			for _, s := range reply.ICEServers {
				urls = append(urls, s.URLs...)
			}
			turnsPort := strconv.Itoa(app.turn.TLSAddr().(*net.TCPAddr).Port)
			if !strings.Contains(strings.Join(urls, " "), "turns:"+acmeTestDomain+":"+turnsPort) {
				t.Fatalf("no turns:%s:%s in %v", acmeTestDomain, turnsPort, urls)
			}
			// TURN over TLS presents the same certificate, with SNI and
			// without (a client that dials by address).
			for _, sni := range []string{acmeTestDomain, ""} {
				conn, err := tls.Dial("tcp", app.turn.TLSAddr().String(), &tls.Config{RootCAs: p.roots, ServerName: sni,
					InsecureSkipVerify: sni == ""}) //nolint:gosec // verified by hand below
				if err != nil {
					t.Fatalf("turns: handshake (SNI %q): %v", sni, err)
				}
				chain := conn.ConnectionState().PeerCertificates
				_ = conn.Close()
				got, inter := chain[0], x509.NewCertPool()
				for _, c := range chain[1:] {
					inter.AddCert(c)
				}
				if _, err := got.Verify(x509.VerifyOptions{Roots: p.roots, Intermediates: inter, DNSName: acmeTestDomain}); err != nil || !got.Equal(leaf) {
					t.Fatalf("turns: certificate (SNI %q): %v, same as HTTPS: %v", sni, err, got.Equal(leaf))
				}
			}
			// Kept for the next start.
			if entries, err := os.ReadDir(filepath.Join(state, "acme")); err != nil || len(entries) < 2 {
				t.Fatalf("ACME cache: %v, %d entries", err, len(entries))
			}
			if challenge == "http-01" { // plain HTTP on the challenge port redirects to the page
				noRedirect := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
				r, err := noRedirect.Get("http://" + app.https.acmeLn.Addr().String() + "/x?y=1")
				if err != nil {
					t.Fatal(err)
				}
				r.Body.Close()
				if loc := r.Header.Get("Location"); r.StatusCode != http.StatusFound || !strings.HasPrefix(loc, "https://127.0.0.1:"+strconv.Itoa(webPort)+"/x?y=1") {
					t.Fatalf("redirect %s to %q", r.Status, loc)
				}
			}
		})
	}
}
