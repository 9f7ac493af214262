package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/gorilla/websocket"

	"videochat/sfu"
	"videochat/signaling"
	"videochat/static"
)

// App is the whole server: web app, signaling, SFU. Tests run several in
// one process on port 0.
type App struct {
	cfg  Config
	log  *slog.Logger
	sfu  *sfu.SFU
	sig  *signaling.Server
	http *http.Server
	ln   net.Listener
}

// NewApp binds every port and wires the parts; Serve starts serving.
func NewApp(cfg Config, log *slog.Logger) (*App, error) {
	a := &App{cfg: cfg, log: log}
	var err error
	var publicIPs []string
	if cfg.PublicIP != "" {
		publicIPs = []string{cfg.PublicIP}
	}
	a.sfu, err = sfu.New(sfu.Config{
		UDPPort: cfg.UDPPort, PublicIPs: publicIPs,
		IncludeLoopback: cfg.IncludeLoopback || onlyLoopback(),
		Logger:          log.With("component", "sfu"),
	})
	if err != nil {
		return nil, err
	}
	a.sig, err = signaling.New(signaling.Config{
		Media:          signaling.SFUMedia(a.sfu),
		AllowedOrigins: cfg.AllowedOrigins,
		Logger:         log.With("component", "signaling"),
	})
	if err != nil {
		_ = a.sfu.Close()
		return nil, err
	}
	a.ln, err = net.Listen("tcp", cfg.Addr)
	if err != nil {
		_ = a.sfu.Close()
		return nil, fmt.Errorf("listen %s: %w", cfg.Addr, err)
	}
	a.http = &http.Server{Handler: a.routes(), ReadHeaderTimeout: 10 * time.Second}
	return a, nil
}

func (a *App) routes() http.Handler {
	mux := http.NewServeMux()
	web := static.Handler()
	mux.Handle("/ws", a.sig)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintln(w, "ok")
	})
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
	return fmt.Sprintf("http://%s/", net.JoinHostPort(host, fmt.Sprint(addr.Port)))
}

// Serve serves HTTP until Close.
func (a *App) Serve() error {
	if err := a.http.Serve(a.ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// Close tells every client the server is going away, ends all calls and
// releases every port, within ctx.
func (a *App) Close(ctx context.Context) error {
	errSig := a.sig.Close(ctx)
	errHTTP := a.http.Shutdown(ctx)
	errSFU := a.sfu.Close()
	return errors.Join(errSig, errHTTP, errSFU)
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
