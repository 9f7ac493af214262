package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"videochat/cluster"
	"videochat/internal/portmux"
	"videochat/metrics"
	"videochat/recorder"
	"videochat/sfu"
	"videochat/signaling"
	"videochat/static"
	"videochat/turn"
)

// App is the whole server: web app, signaling, SFU. Tests run several in
// one process on port 0.
type App struct {
	cfg      Config
	log      *slog.Logger
	sfu      *sfu.SFU
	rec      *recorder.Recorder   // nil unless recording
	turn     *turn.Server         // nil when disabled or external
	ice      turn.ICEServerSource // what users get at login; nil for none
	sig      *signaling.Server
	dir      cluster.Directory // the other nodes (cluster.Alone without -redis-url)
	http     *http.Server
	ln       net.Listener // the -addr listener, demultiplexed by port (app_oneport.go)
	port     *portmux.Mux
	redirect *http.Server // plain HTTP on a TLS port: redirected to https
	web      http.Handler // the static browser app
	tls      bool
	https    httpsState
	selftest selfTest
	cancel   context.CancelFunc // stops background work (the self-test, the metrics sampler)
	wg       sync.WaitGroup

	metrics     *metrics.Metrics
	metricsLn   net.Listener  // -metrics-addr; nil: /metrics on the main port (this host only)
	metricsSrv  *http.Server  // serves metricsLn
	metricsDone chan struct{} // closed when metricsSrv's Serve returns
	serving     atomic.Bool   // Serve has started (readyz)
	draining    atomic.Bool   // Close has started (readyz)

	closeOnce sync.Once
	closeErr  error
}

// NewApp binds every port and wires the parts; Serve starts serving.
func NewApp(cfg Config, log *slog.Logger) (*App, error) {
	a := &App{cfg: cfg, log: log}
	if err := a.build(); err != nil {
		a.release()
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	a.wg.Add(1)
	go func() { defer a.wg.Done(); a.runSelfTest(ctx) }()
	a.wg.Add(1)
	go func() { defer a.wg.Done(); a.metrics.Run(ctx, cfg.bitrateSample) }()
	return a, nil
}

func (a *App) build() error {
	cfg, log := a.cfg, a.log
	tlsCfg, turnTLS, err := a.certificates()
	if err != nil {
		return err
	}
	if err := a.listen(tlsCfg); err != nil {
		return err
	}
	var publicIPs []string
	if cfg.PublicIP != "" {
		publicIPs = []string{cfg.PublicIP}
	}
	sfuCfg := sfu.Config{
		UDPPort: cfg.UDPPort, PublicIPs: publicIPs, SocketBuffer: cfg.UDPBuffer, BatchedReads: cfg.UDPBatchRead, PionReceive: cfg.PionReceive, PionSend: cfg.PionSend,
		PionRTCP:         cfg.PionRTCP,
		NetSyscalls:      cfg.NetSyscalls,
		MediaReaders:     cfg.MediaReaders,
		IncludeLoopback:  cfg.IncludeLoopback || onlyLoopback(),
		ICEFailedTimeout: cfg.Grace,
		ConnectTimeout:   cfg.ConnectTimeout,
		ICETCP:           a.iceTCPListeners(),
		Logger:           log.With("component", "sfu"),
	}
	if cfg.RecordDir != "" {
		a.rec, err = recorder.New(recorder.Config{Dir: cfg.RecordDir, OnFinish: cfg.RecordOnFinish,
			OnFinishTimeout: cfg.RecordTimeout, Logger: log.With("component", "recorder")})
		if err != nil {
			return err
		}
		sfuCfg.Recorder = a.rec
	}
	a.sfu, err = sfu.New(sfuCfg)
	if err != nil {
		return err
	}
	if err := a.joinCluster(); err != nil { // before TURN: its relays may reach other nodes
		return err
	}
	if err := a.startTURN(turnTLS); err != nil {
		return err
	}
	a.sig, err = signaling.New(signaling.Config{
		Media:          signaling.SFUMedia(a.sfu),
		ICEServers:     a.iceServersFor,
		Recording:      a.rec != nil,
		AllowedOrigins: cfg.AllowedOrigins,
		ResumeGrace:    cfg.Grace,
		RingTimeout:    cfg.RingTimeout,
		MaxConns:       cfg.Limits.MaxConns, MaxConnsPerIP: cfg.Limits.MaxConnsPerIP,
		TrustedProxies: cfg.Limits.TrustedProxies, LoginTimeout: cfg.Limits.LoginTimeout,
		MessageRate: cfg.Limits.MessageRate, MaxCandidates: cfg.Limits.MaxCandidates,
		CallAttempts: cfg.Limits.CallAttempts, CallAttemptsPerIP: cfg.Limits.CallAttemptsPerIP,
		AuthSecret: []byte(cfg.AuthSecret),
		Cluster:    a.dir,
		Logger:     log.With("component", "signaling"),
		OnMediaConnected: func(leg string, setup time.Duration) {
			if a.metrics != nil {
				a.metrics.ObserveSetup(leg, setup)
			}
		},
	})
	if err != nil {
		return err
	}
	if err := a.buildMetrics(); err != nil {
		return err
	}
	if cfg.AuthSecret != "" {
		log.Info("access control on: login needs a token signed with -auth-secret")
	}
	if err := a.listenHTTPS(); err != nil {
		return err
	}
	// Slowloris and slow bodies: headers within 10 s, a whole request
	// within 30 s, idle keep-alive connections closed after 2 min. A
	// WebSocket is not cut by these: hijacking the connection (gorilla's
	// Upgrade) clears its deadlines, and the signaling reader sets its own.
	a.http = &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, ErrorLog: httpErrorLog(log)}
	return nil
}

// release frees what build acquired, after a failure.
func (a *App) release() {
	if a.port != nil {
		_ = a.port.Close()
	}
	if a.metricsLn != nil {
		_ = a.metricsLn.Close()
	}
	a.releaseHTTPS()
	if a.sig != nil { // a port could not be opened after it started
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = a.sig.Close(ctx)
		cancel()
	}
	if a.turn != nil {
		_ = a.turn.Close()
	}
	if a.sfu != nil {
		_ = a.sfu.Close()
	}
	if a.rec != nil {
		_ = a.rec.Close()
	}
	if a.dir != nil {
		_ = a.dir.Close(context.Background())
	}
}

func loadTLS(cfg Config) (*tls.Config, error) {
	if cfg.TLSCert == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	web := static.Handler()
	a.web = web
	a.diagRoutes(mux)
	mux.Handle("/ws", a.sig)
	mux.HandleFunc("/healthz", a.healthz)
	mux.HandleFunc("/readyz", a.readyz)
	if a.metricsLn == nil {
		mux.Handle("/metrics", a.localMetrics())
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if websocket.IsWebSocketUpgrade(r) { // tutorial clients dial ws://host:9090
			a.sig.ServeHTTP(w, r)
			return
		}
		web.ServeHTTP(w, r)
	})
	return mux
}

// URL is the address a person opens in a browser.
func (a *App) URL() string {
	addr := a.ln.Addr().(*net.TCPAddr)
	host := "localhost"
	if !addr.IP.IsUnspecified() && !addr.IP.IsLoopback() {
		host = addr.IP.String()
	}
	scheme := "http"
	if a.tls {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s/", scheme, net.JoinHostPort(host, fmt.Sprint(addr.Port)))
}

// hookShutdownGrace is how long a stopping server waits for running
// -record-on-finish commands (systemd's default stop timeout is 90 s).
const hookShutdownGrace = 30 * time.Second

// Close tells every client the server is going away, ends all calls and
// releases every port, within ctx (and hookShutdownGrace for on-finish
// commands still running). Idempotent: later calls return the first result.
func (a *App) Close(ctx context.Context) error {
	a.closeOnce.Do(func() { a.closeErr = a.close(ctx) })
	return a.closeErr
}

func (a *App) close(ctx context.Context) error {
	a.drain(ctx)
	a.cancel()
	a.wg.Wait()
	errSig := a.sig.Close(ctx)
	errCluster := a.dir.Close(ctx) // after signaling: its last leave messages are relayed first
	errHTTP := errors.Join(a.http.Shutdown(ctx), a.redirect.Shutdown(ctx), a.port.Close())
	errHTTPS := a.closeHTTPS(ctx)
	var errTURN error
	if a.turn != nil {
		errTURN = a.turn.Close()
	}
	errSFU := a.sfu.Close()
	var errRec error
	if a.rec != nil {
		// Ending the calls above has ended every track the signaling knew
		// of; Shutdown finalises anything still open and gives running
		// on-finish commands (uploads, say) their own bounded time.
		hookCtx, cancel := context.WithTimeout(context.Background(), hookShutdownGrace)
		errRec = a.rec.Shutdown(hookCtx)
		cancel()
	}
	errMetrics := a.closeMetrics(ctx)
	return errors.Join(errSig, errCluster, errHTTP, errHTTPS, errTURN, errSFU, errRec, errMetrics)
}

// onlyLoopback reports whether the host has no usable non-loopback address
// (a container or namespace with only lo): then media must use loopback.
func onlyLoopback() bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return true
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
			return false
		}
	}
	return true
}
