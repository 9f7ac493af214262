package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"videochat/internal/portmux"
	"videochat/turn"
)

// One port for everything: the -addr listener is demultiplexed by what each
// connection sends first (internal/portmux), so one TCP port (443 on a
// public host) carries
//
//   - the web app and WebSocket: HTTPS with a certificate (plain HTTP
//     there is redirected to https), plain HTTP without one;
//   - TURN over TCP and, with a certificate, TURN over TLS (turns:), into the
//     embedded TURN server, beside its own ports;
//   - passive ICE over TCP (RFC 4571-framed STUN) straight to the SFU
//     (-ice-tcp, on by default): no relay at all for clients whose network
//     blocks UDP but lets this port through.
//
// The login reply's iceServers then also name this port: turns: with a
// certificate, turn: (TCP) without.

// onePortTimeout bounds how long a connection may take to show what it is
// (TLS handshake included); a silent one is closed then.
const onePortTimeout = 10 * time.Second

// ICE-TCP connections open at once, per client address (IPv6: /64) and in
// all; more are closed at once. A browser opens one or two per call (one
// per pair of its host address and ours); pion keeps one that sent an
// unknown ICE username for 30 s.
const (
	iceTCPPerSource = 100
	iceTCPTotal     = 10000
)

// listen opens the -addr port and its demultiplexer.
func (a *App) listen(tlsCfg *tls.Config) error {
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", a.cfg.Addr, err)
	}
	if a.cfg.wrapListener != nil {
		ln = a.cfg.wrapListener(ln)
	}
	a.ln, a.tls = ln, tlsCfg != nil
	a.port = portmux.New(ln, portmux.Config{TLS: tlsCfg, Timeout: onePortTimeout,
		Logger: a.log.With("component", "portmux")})
	// Take the web listeners now: a connection classified before Serve
	// runs waits for its listener's Accept (a kind nobody took is closed).
	if a.tls {
		a.port.Listener(portmux.HTTPS)
	}
	a.port.Listener(portmux.HTTP)
	a.redirect = &http.Server{Handler: http.HandlerFunc(redirectToHTTPS),
		ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	return nil
}

// iceTCPListeners hands the SFU the ICE-TCP connections of the port.
func (a *App) iceTCPListeners() []net.Listener {
	if !a.cfg.ICETCP {
		return nil
	}
	return []net.Listener{portmux.Limit(a.port.Listener(portmux.ICETCP), iceTCPPerSource, iceTCPTotal)}
}

// turnListeners hands the embedded TURN server the port's TURN connections.
func (a *App) turnListeners() []net.Listener {
	out := []net.Listener{a.port.Listener(portmux.STUN)}
	if a.tls {
		out = append(out, a.port.Listener(portmux.STUNTLS))
	}
	return out
}

// Serve serves everything on the port until Close.
func (a *App) Serve() error {
	wait := a.serveHTTPS() // the LAN HTTPS and ACME HTTP-01 ports, when on
	a.serveMetrics()
	a.serving.Store(true)
	errs := make(chan error, 3)
	n := 2
	go func() { errs <- a.port.Serve() }()
	if a.tls {
		n++
		go func() { errs <- a.http.Serve(a.port.Listener(portmux.HTTPS)) }()
		go func() { errs <- a.redirect.Serve(a.port.Listener(portmux.HTTP)) }()
	} else {
		go func() { errs <- a.http.Serve(a.port.Listener(portmux.HTTP)) }()
	}
	var err error
	for range n {
		if e := <-errs; e != nil && !errors.Is(e, http.ErrServerClosed) && err == nil {
			err = e
			_ = a.port.Close() // one part failed: stop the others
		}
	}
	if err != nil {
		return err // the HTTPS ports end at Close
	}
	return wait()
}

// redirectToHTTPS answers plain HTTP on a TLS port.
func redirectToHTTPS(w http.ResponseWriter, r *http.Request) {
	if r.Host == "" {
		http.Error(w, "this port speaks HTTPS", http.StatusBadRequest)
		return
	}
	http.Redirect(w, r, "https://"+r.Host+r.URL.RequestURI(), http.StatusMovedPermanently)
}

// onePortICE adds turn: (and turns:) URLs on the -addr port to what src
// hands out.
func (a *App) onePortICE(src turn.ICEServerSource) turn.ICEServerSource {
	addr, ok := a.ln.Addr().(*net.TCPAddr)
	if !ok {
		return src
	}
	return onePortServers{src: src, port: addr.Port, tls: a.tls}
}

type onePortServers struct {
	src  turn.ICEServerSource
	port int
	tls  bool
}

func (o onePortServers) ICEServers(user, host string) []turn.ICEServer {
	servers := o.src.ICEServers(user, host)
	for i, s := range servers {
		h := turnHost(s.URLs)
		if h == "" || s.Username == "" {
			continue
		}
		// With a certificate only turns: is named here: a network that
		// lets out nothing but this port usually lets out only TLS on it,
		// and one URL per port spares each client an allocation. Plain
		// TURN over TCP to this port is still served.
		url := "turn:" + h + ":" + strconv.Itoa(o.port) + "?transport=tcp"
		if o.tls {
			url = "turns:" + h + ":" + strconv.Itoa(o.port) + "?transport=tcp"
		}
		servers[i].URLs = append(append([]string(nil), s.URLs...), url)
	}
	return servers
}

// turnHost is the host of the first turn: URL ("turn:HOST:PORT?...").
func turnHost(urls []string) string {
	for _, u := range urls {
		if rest, ok := strings.CutPrefix(u, "turn:"); ok {
			rest, _, _ = strings.Cut(rest, "?")
			if i := strings.LastIndexByte(rest, ':'); i > 0 {
				return rest[:i]
			}
		}
	}
	return ""
}

// logOnePort says what the -addr port carries.
func (a *App) logOnePort() {
	carries := []string{"http"}
	if a.tls {
		carries = []string{"https"}
	}
	if a.turn != nil {
		carries = append(carries, "turn-tcp")
		if a.tls {
			carries = append(carries, "turn-tls")
		}
	}
	if a.cfg.ICETCP {
		carries = append(carries, "ice-tcp")
	}
	a.log.Info("one port", "addr", a.ln.Addr().String(), "carries", strings.Join(carries, " "))
}
