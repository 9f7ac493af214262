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
	"time"

	"github.com/gorilla/websocket"

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
	http     *http.Server
	ln       net.Listener
	tls      bool
	selftest selfTest
	cancel   context.CancelFunc // stops background work (the self-test)
	wg       sync.WaitGroup

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
	return a, nil
}

func (a *App) build() error {
	cfg, log := a.cfg, a.log
	tlsCfg, err := loadTLS(cfg)
	if err != nil {
		return err
	}
	var publicIPs []string
	if cfg.PublicIP != "" {
		publicIPs = []string{cfg.PublicIP}
	}
	sfuCfg := sfu.Config{
		UDPPort: cfg.UDPPort, PublicIPs: publicIPs, SocketBuffer: cfg.UDPBuffer,
		IncludeLoopback:  cfg.IncludeLoopback || onlyLoopback(),
		ICEFailedTimeout: cfg.Grace,
		ConnectTimeout:   cfg.ConnectTimeout,
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
	if err := a.startTURN(tlsCfg); err != nil {
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
		Logger:     log.With("component", "signaling"),
	})
	if err != nil {
		return err
	}
	if cfg.AuthSecret != "" {
		log.Info("access control on: login needs a token signed with -auth-secret")
	}
	a.ln, err = net.Listen("tcp", cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	if cfg.wrapListener != nil {
		a.ln = cfg.wrapListener(a.ln)
	}
	if tlsCfg != nil {
		a.ln, a.tls = tls.NewListener(a.ln, tlsCfg), true
	}
	// Slowloris and slow bodies: headers within 10 s, a whole request
	// within 30 s, idle keep-alive connections closed after 2 min. A
	// WebSocket is not cut by these: hijacking the connection (gorilla's
	// Upgrade) clears its deadlines, and the signaling reader sets its own.
	a.http = &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	return nil
}

// release frees what build acquired, after a failure.
func (a *App) release() {
	if a.ln != nil {
		_ = a.ln.Close()
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
	mux.Handle("/ws", a.sig)
	mux.HandleFunc("/healthz", a.healthz)
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

// Serve serves HTTP until Close.
func (a *App) Serve() error {
	if err := a.http.Serve(a.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
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
	a.cancel()
	a.wg.Wait()
	errSig := a.sig.Close(ctx)
	errHTTP := a.http.Shutdown(ctx)
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
	return errors.Join(errSig, errHTTP, errTURN, errSFU, errRec)
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
