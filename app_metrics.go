package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"videochat/metrics"
	"videochat/recorder"
	"videochat/turn"
)

// Operating: Prometheus metrics, readiness, log format.
//
// Where /metrics is served: with -metrics-addr, on that listener only (to
// anyone who reaches it: bind it to a private or loopback address, or
// firewall it). Without it, on the main port, but only to clients on this
// host: the numbers (users online, call counts, traffic) are not for the
// public, and the main port usually is public. A request that came through
// a reverse proxy (X-Forwarded-For, Forwarded) is refused unless the proxy
// is trusted (-trusted-proxies) and says the client is on this host too:
// a proxy on the same machine would otherwise make every visitor local.

// buildMetrics creates the registry over the App's parts; called by build
// once the parts exist.
func (a *App) buildMetrics() error {
	src := metrics.Sources{SFUTotals: a.sfu.Totals, SFULoad: a.sfu.Load, SFUReaders: a.sfu.MediaReaders, Signaling: a.sig.Stats}
	if a.turn != nil {
		src.TURN = func() turn.Stats { return a.turn.Stats() }
	}
	if a.rec != nil {
		src.Recorder = func() recorder.Stats { return a.rec.Stats() }
	}
	if a.cfg.RedisURL != "" {
		src.Cluster = a.dir.Stats
	}
	a.metrics = metrics.New(src)
	if a.cfg.MetricsAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", a.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("-metrics-addr %s: %w", a.cfg.MetricsAddr, err)
	}
	a.metricsLn = ln
	mux := http.NewServeMux()
	mux.Handle("/metrics", a.metrics.Handler())
	mux.HandleFunc("/healthz", a.healthz)
	mux.HandleFunc("/readyz", a.readyz)
	a.metricsSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	return nil
}

// MetricsURL is where /metrics is served.
func (a *App) MetricsURL() string {
	if a.metricsLn == nil {
		return a.URL() + "metrics"
	}
	return "http://" + a.metricsLn.Addr().String() + "/metrics"
}

// localMetrics serves /metrics on the main port to this host only.
func (a *App) localMetrics() http.Handler {
	h := a.metrics.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !a.fromThisHost(r) {
			http.Error(w, "metrics are served to this host only; use -metrics-addr to serve them elsewhere", http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// fromThisHost reports whether r's client is on this host: a loopback
// peer, and, if the request was forwarded, a trusted proxy naming a
// loopback client.
func (a *App) fromThisHost(r *http.Request) bool {
	peer := remoteAddr(r.RemoteAddr)
	if !peer.IsLoopback() {
		return false
	}
	xff := r.Header.Values("X-Forwarded-For")
	if len(r.Header.Values("Forwarded")) > 0 {
		return false // not parsed: refuse rather than guess
	}
	if len(xff) == 0 {
		return true
	}
	if !a.trustedProxy(peer) {
		return false
	}
	for _, hop := range strings.Split(strings.Join(xff, ","), ",") {
		ip, err := netip.ParseAddr(strings.TrimSpace(hop))
		if err != nil || !ip.Unmap().IsLoopback() {
			return false
		}
	}
	return true
}

func (a *App) trustedProxy(ip netip.Addr) bool {
	for _, p := range a.cfg.Limits.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

func remoteAddr(s string) netip.Addr {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// serveMetrics runs the -metrics-addr listener, if any, until close.
func (a *App) serveMetrics() {
	if a.metricsSrv == nil {
		return
	}
	a.metricsDone = make(chan struct{})
	go func() {
		defer close(a.metricsDone)
		if err := a.metricsSrv.Serve(a.metricsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("metrics listener failed", "err", err)
		}
	}()
}

// closeMetrics stops the -metrics-addr listener (last: scrapes see the
// shutdown until the end).
func (a *App) closeMetrics(ctx context.Context) error {
	if a.metricsSrv == nil {
		return nil
	}
	err := a.metricsSrv.Shutdown(ctx)
	_ = a.metricsLn.Close() // when Serve never ran
	if a.metricsDone != nil {
		<-a.metricsDone
	}
	return err
}

// readyz answers 200 while the server takes new users and calls: every
// listener bound, the SFU and TURN up (they are built before Serve) and
// Serve running; 503 once shutdown has begun (for -shutdown-delay, load
// balancers see it before anything closes).
func (a *App) readyz(w http.ResponseWriter, _ *http.Request) {
	status, code := "ready", http.StatusOK
	switch {
	case a.draining.Load():
		status, code = "shutting down", http.StatusServiceUnavailable
	case !a.serving.Load():
		status, code = "starting", http.StatusServiceUnavailable
	}
	turnState := "disabled"
	switch {
	case a.turn != nil:
		turnState = "up"
	case a.cfg.TURNExternal != "":
		turnState = "external"
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"status": status, "sfu": "up", "turn": turnState})
}

// drain marks the server not ready and waits -shutdown-delay (or until
// ctx ends) so that load balancers stop sending new users first.
func (a *App) drain(ctx context.Context) {
	a.draining.Store(true)
	if a.cfg.ShutdownDelay <= 0 {
		return
	}
	a.log.Info("not ready; shutting down after the delay", "delay", a.cfg.ShutdownDelay)
	t := time.NewTimer(a.cfg.ShutdownDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// newLogger builds the program's logger: text (the default) or JSON lines.
func newLogger(cfg Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
