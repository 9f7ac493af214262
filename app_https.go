package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"

	"videochat/internal/certs"
)

// httpsState is what the App adds for HTTPS besides -addr: the LAN
// listener with its self-signed certificate, or ACME with its HTTP-01
// listener.
type httpsState struct {
	lan   *certs.LAN   // the self-signed certificate; nil unless the LAN listener runs
	lanLn net.Listener // -https-addr, TLS

	acme     *autocert.Manager // nil unless -acme-domain
	acmeLn   net.Listener      // -acme-http-addr: HTTP-01 and a redirect to HTTPS
	acmeHTTP *http.Server

	mu       sync.Mutex     // orders serveHTTPS's wg.Add before closeHTTPS's wg.Wait
	closed   bool           // closeHTTPS began: serveHTTPS starts nothing
	started  bool           // serveHTTPS ran: the servers own the listeners
	wg       sync.WaitGroup // the extra servers, the ACME warm-up and the address watch
	stop     chan struct{}  // closed by closeHTTPS: ends the address watch
	stopOnce sync.Once
}

// httpErrorLog routes net/http's own messages to the log: failed TLS
// handshakes at debug level (every browser that has not yet accepted the
// LAN certificate makes some), the rest as warnings.
func httpErrorLog(log *slog.Logger) *stdlog.Logger {
	return stdlog.New(httpLogWriter{log}, "", 0)
}

type httpLogWriter struct{ log *slog.Logger }

func (w httpLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelWarn
	if strings.Contains(msg, "TLS handshake error") {
		level = slog.LevelDebug
	}
	w.log.Log(context.Background(), level, msg, "component", "http")
	return len(p), nil
}

// defaultStateDir is where certificates are kept unless -state-dir says.
func defaultStateDir() string {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "" // no HOME: -state-dir is required where it is needed
	}
	return filepath.Join(dir, "videochat")
}

// certificates decides where certificates come from: -tls-cert files, ACME
// or (for the LAN listener) a self-signed one. It returns the TLS configs
// of the -addr listener and of TURN over TLS: both nil when -addr serves
// plain HTTP.
func (a *App) certificates() (web, turnTLS *tls.Config, err error) {
	cfg := a.cfg
	switch {
	case cfg.TLSCert != "":
		web, err = loadTLS(cfg)
		return web, web, err
	case len(cfg.ACMEDomains) > 0:
		if cfg.StateDir == "" {
			return nil, nil, errors.New("-acme-domain needs -state-dir (no default: the user's config directory is unknown)")
		}
		m, err := certs.NewACME(certs.ACMEConfig{Domains: cfg.ACMEDomains, Email: cfg.ACMEEmail,
			DirectoryURL: cfg.ACMEDir, CABundle: cfg.ACMECABundle, CacheDir: filepath.Join(cfg.StateDir, "acme")})
		if err != nil {
			return nil, nil, err
		}
		a.https.acme = m
		getCert := certs.DefaultServerName(m.GetCertificate, cfg.ACMEDomains[0])
		// HTTP/1.1 only: gorilla's WebSocket upgrade needs it, and a
		// browser that negotiated h2 would try WebSocket over h2.
		web = &tls.Config{GetCertificate: getCert, NextProtos: []string{"http/1.1", acme.ALPNProto}, MinVersion: tls.VersionTLS12}
		turnTLS = &tls.Config{GetCertificate: getCert, MinVersion: tls.VersionTLS12}
		return web, turnTLS, nil
	case cfg.HTTPSAddr != "":
		if cfg.StateDir == "" {
			return nil, nil, errors.New("the LAN HTTPS listener (-https-addr) needs -state-dir for its certificate (no default: the user's config directory is unknown); set it, or -https-addr= to turn HTTPS off")
		}
		names, err := certs.LocalNames()
		if err != nil {
			a.log.Warn("LAN certificate: cannot list local addresses; it covers only localhost", "err", err)
		}
		lan, err := certs.LoadOrCreate(filepath.Join(cfg.StateDir, "tls"), names, time.Now())
		if err != nil {
			return nil, nil, fmt.Errorf("LAN certificate: %w", err)
		}
		a.https.lan = lan
		if lan.Generated {
			a.log.Info("LAN certificate generated: browsers warn once per device", "why", lan.Reason, "fingerprint", lan.Fingerprint)
		}
		return nil, nil, nil
	}
	return nil, nil, nil
}

// listenHTTPS opens the extra listeners (after -addr, which build opened).
func (a *App) listenHTTPS() error {
	h := &a.https
	if h.lan != nil {
		ln, err := net.Listen("tcp", a.cfg.HTTPSAddr)
		if err != nil {
			return fmt.Errorf("listen %s (-https-addr): %w", a.cfg.HTTPSAddr, err)
		}
		h.lanLn = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{h.lan.Cert}, MinVersion: tls.VersionTLS12})
		h.stop = make(chan struct{})
	}
	if h.acme != nil && a.cfg.ACMEHTTPAddr != "" {
		ln, err := net.Listen("tcp", a.cfg.ACMEHTTPAddr)
		if err != nil {
			return fmt.Errorf("listen %s (-acme-http-addr): %w", a.cfg.ACMEHTTPAddr, err)
		}
		h.acmeLn = ln
		h.acmeHTTP = &http.Server{ErrorLog: httpErrorLog(a.log), Handler: withoutPort(h.acme.HTTPHandler(http.HandlerFunc(a.redirectToHTTPS))),
			ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	}
	return nil
}

// withoutPort strips a port from the Host header: autocert checks the
// host against -acme-domain as it is, and a CA validating on a port other
// than 80 (a test CA, or a port-forwarding setup) sends "name:port".
func withoutPort(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host, _, err := net.SplitHostPort(r.Host); err == nil {
			r2 := r.Clone(r.Context())
			r2.Host = host
			r = r2
		}
		h.ServeHTTP(w, r)
	})
}

// redirectToHTTPS sends plain-HTTP visitors of the ACME port to the
// HTTPS page (on -addr's port).
func (a *App) redirectToHTTPS(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "Use HTTPS", http.StatusBadRequest)
		return
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if port := a.ln.Addr().(*net.TCPAddr).Port; port != 443 {
		host = net.JoinHostPort(host, fmt.Sprint(port))
	}
	http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusFound)
}

// serveHTTPS serves the extra listeners and starts fetching ACME
// certificates; the returned function waits for the servers to end (the
// App's Close shuts them down) and returns their errors.
func (a *App) serveHTTPS() (wait func() error) {
	h := &a.https
	var mu sync.Mutex
	var errs []error
	wait = func() error {
		h.wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return errors.Join(errs...)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed { // Close came first (and closed the listeners)
		return wait
	}
	h.started = true
	serve := func(srv *http.Server, ln net.Listener) {
		defer h.wg.Done()
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("HTTP server stopped", "addr", ln.Addr().String(), "err", err)
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	if h.lanLn != nil {
		h.wg.Add(1)
		go serve(a.http, h.lanLn) // Shutdown of a.http closes it too
	}
	if h.acmeLn != nil {
		h.wg.Add(1)
		go serve(h.acmeHTTP, h.acmeLn)
	}
	if h.lanLn != nil {
		h.wg.Add(1)
		go func() { defer h.wg.Done(); a.watchLAN() }()
	}
	if h.acme != nil {
		h.wg.Add(1)
		go func() { defer h.wg.Done(); a.warmACME() }()
	}
	return wait
}

// warmACME obtains (or loads from the cache) each domain's certificate at
// start, so the first visitor does not wait and a problem shows in the log
// now. Each attempt is bounded by autocert (5 min); a failure is retried at
// the next TLS connection.
func (a *App) warmACME() {
	for _, d := range a.cfg.ACMEDomains {
		start := time.Now()
		cert, err := a.https.acme.GetCertificate(&tls.ClientHelloInfo{ServerName: d,
			CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}})
		if err != nil {
			a.log.Warn("ACME: no certificate yet; retried at the next HTTPS connection", "domain", d, "err", err)
			continue
		}
		args := []any{"domain", d, "took", time.Since(start).Round(time.Millisecond)}
		if cert.Leaf != nil {
			args = append(args, "expires", cert.Leaf.NotAfter.UTC().Format(time.DateOnly), "issuer", cert.Leaf.Issuer.CommonName)
		}
		a.log.Info("ACME certificate ready", args...)
	}
}

// watchLAN warns when the host gains a name or address the LAN
// certificate does not cover (another network joined while running). It
// does not replace the certificate under running clients: devices that
// accepted it would be warned again at their next connection; the next
// start makes a new one.
func (a *App) watchLAN() {
	every := a.cfg.lanCheckEvery
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	warned := map[string]bool{}
	for {
		select {
		case <-a.https.stop:
			return
		case <-t.C:
		}
		names, err := certs.LocalNames()
		if err != nil {
			continue
		}
		if m := certs.Missing(a.https.lan.Cert.Leaf, names); m != "" && !warned[m] {
			warned[m] = true
			a.log.Warn("the LAN certificate does not cover a new name or address of this host: devices opening it get a name warning; restart to make a certificate that does",
				"missing", m, "urls", strings.Join(a.LANURLs(), " "))
		}
	}
}

// closeHTTPS shuts the ACME HTTP server down (a.http's Shutdown closes the
// LAN listener) and waits for the extra goroutines, within ctx.
func (a *App) closeHTTPS(ctx context.Context) error {
	h := &a.https
	h.mu.Lock()
	h.closed = true
	if !h.started {
		a.releaseHTTPS()
	}
	h.mu.Unlock()
	var err error
	if h.acmeHTTP != nil {
		err = h.acmeHTTP.Shutdown(ctx)
	}
	if h.stop != nil {
		h.stopOnce.Do(func() { close(h.stop) })
	}
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done(): // an ACME request still running ends within autocert's bound
		err = errors.Join(err, fmt.Errorf("https: %w", ctx.Err()))
	}
	return err
}

// releaseHTTPS closes the extra listeners after a failed start.
func (a *App) releaseHTTPS() {
	for _, ln := range []net.Listener{a.https.lanLn, a.https.acmeLn} {
		if ln != nil {
			_ = ln.Close()
		}
	}
}

// LANURLs are the addresses another device on the network opens (the
// LAN HTTPS listener on each local address); nil when it is off.
func (a *App) LANURLs() []string {
	if a.https.lanLn == nil {
		return nil
	}
	addr := a.https.lanLn.Addr().(*net.TCPAddr)
	port := fmt.Sprint(addr.Port)
	if !addr.IP.IsUnspecified() {
		return []string{"https://" + net.JoinHostPort(addr.IP.String(), port) + "/"}
	}
	ips, _ := certs.LANAddrs()
	var out []string
	for _, ip := range ips {
		out = append(out, "https://"+net.JoinHostPort(ip.String(), port)+"/")
	}
	return out
}

// printHTTPS tells the person at the console how other devices join.
func (a *App) printHTTPS(w io.Writer) {
	switch {
	case a.https.lan != nil:
		urls := a.LANURLs()
		if len(urls) == 0 {
			fmt.Fprintf(w, "\nHTTPS for other devices is on %s, but this host has no network address yet.\n", a.https.lanLn.Addr())
			return
		}
		fmt.Fprintf(w, "\nOther devices on this network join at (camera and microphone need HTTPS):\n")
		for _, u := range urls {
			fmt.Fprintf(w, "    %s\n", u)
		}
		fmt.Fprintf(w, "The browser warns that the certificate is self-signed. Open the certificate from the\n"+
			"warning page (\"Not secure\" / \"Advanced\" / \"View certificate\"); if its SHA-256 fingerprint is\n"+
			"    %s\n"+
			"it is this server's, and you can proceed.\n\n", a.https.lan.Fingerprint)
	case a.https.acme != nil:
		port := a.ln.Addr().(*net.TCPAddr).Port
		for _, d := range a.cfg.ACMEDomains {
			u := "https://" + d + "/"
			if port != 443 {
				u = "https://" + net.JoinHostPort(d, fmt.Sprint(port)) + "/"
			}
			fmt.Fprintf(w, "\nOpen %s (certificate from %s)\n", u, acmeDirectory(a.cfg.ACMEDir))
		}
	}
}

func acmeDirectory(u string) string {
	if u == "" {
		return autocert.DefaultACMEDirectory
	}
	return strings.TrimSpace(u)
}
