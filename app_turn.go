package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"videochat/signaling"
	"videochat/turn"
)

// startTURN starts the embedded TURN server (unless disabled or replaced by
// an external one) and decides what ICE servers users get at login.
func (a *App) startTURN(tlsCfg *tls.Config) error {
	cfg := a.cfg
	if cfg.TURNExternal != "" {
		a.ice = turn.External{URLs: splitList(cfg.TURNExternal), Secret: []byte(cfg.TURNSecret), TTL: cfg.TURNCredTTL}
		return nil
	}
	if cfg.TURNAddr == "" {
		return nil
	}
	tc := turn.Config{
		ListenAddr:   cfg.TURNAddr,
		Secret:       []byte(cfg.TURNSecret),
		AllowedPeers: a.mediaEndpoints(),
		AllowPeer:    a.clusterPeer, // the media endpoints of the cluster's other live nodes
		RelayPortMin: cfg.relayPorts[0], RelayPortMax: cfg.relayPorts[1],
		CredentialTTL: cfg.TURNCredTTL, SourceQuota: cfg.TURNPerIP, SetupTimeout: cfg.TURNSetup,
		Listeners: a.turnListeners(),
		Logger:    a.log.With("component", "turn"),
	}
	if ip := net.ParseIP(cfg.PublicIP); ip != nil && ip.To4() != nil {
		tc.RelayIP = ip
	}
	if tlsCfg != nil && cfg.TURNTLSAddr != "" {
		tc.TLSAddr, tc.TLSConfig = cfg.TURNTLSAddr, tlsCfg
	}
	srv, err := turn.New(tc)
	if err != nil {
		return fmt.Errorf("turn: %w", err)
	}
	a.turn, a.ice = srv, a.onePortICE(srv)
	return nil
}

// mediaEndpoints are the only places the TURN relay may send to: the SFU's
// own media sockets, and the public address when behind 1:1 NAT.
func (a *App) mediaEndpoints() []netip.AddrPort {
	var out []netip.AddrPort
	port := 0
	for _, u := range a.sfu.MediaAddrs() {
		if ap := u.AddrPort(); ap.Addr().IsValid() {
			out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
			port = u.Port
		}
	}
	if ip, err := netip.ParseAddr(a.cfg.PublicIP); err == nil && port != 0 {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(port)))
	}
	return out
}

// iceServersFor converts the TURN package's servers for the login reply.
func (a *App) iceServersFor(user, host string) []signaling.ICEServer {
	if a.ice == nil {
		return nil
	}
	var out []signaling.ICEServer
	for _, s := range a.ice.ICEServers(user, host) {
		out = append(out, signaling.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return out
}

// selfTest is the start-up relay check (like Galène's): through our own
// TURN server, over UDP and over TCP, a relay-only client must reach our
// own SFU. The result is logged and shown by /healthz.
type selfTest struct {
	mu      sync.Mutex
	results map[string]string // transport -> "ok", "pending" or the error
}

func (a *App) runSelfTest(ctx context.Context) {
	if a.turn == nil {
		return
	}
	servers := a.turn.ICEServers("selftest", "127.0.0.1")
	for _, transport := range []string{"udp", "tcp"} {
		a.selftest.set(transport, "pending")
	}
	for _, transport := range []string{"udp", "tcp"} {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		start := time.Now()
		err := a.sfu.Probe(pctx, onlyTransport(servers, transport), true)
		cancel()
		if ctx.Err() != nil {
			return // shutting down
		}
		if err != nil {
			a.selftest.set(transport, err.Error())
			a.log.Warn("TURN self-test failed: relayed calls may not work", "transport", transport, "err", err)
			continue
		}
		a.selftest.set(transport, "ok")
		a.log.Info("TURN self-test passed", "transport", transport, "took", time.Since(start).Round(time.Millisecond))
	}
}

// onlyTransport keeps the turn: URLs of one transport.
func onlyTransport(servers []turn.ICEServer, transport string) []webrtc.ICEServer {
	var out []webrtc.ICEServer
	for _, s := range servers {
		var urls []string
		for _, u := range s.URLs {
			if strings.HasPrefix(u, "turn:") && strings.HasSuffix(u, "transport="+transport) {
				urls = append(urls, u)
			}
		}
		if len(urls) > 0 {
			out = append(out, webrtc.ICEServer{URLs: urls, Username: s.Username, Credential: s.Credential})
		}
	}
	return out
}

func (s *selfTest) set(transport, result string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.results == nil {
		s.results = map[string]string{}
	}
	s.results[transport] = result
}

func (s *selfTest) snapshot() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]string, len(s.results))
	for k, v := range s.results {
		out[k] = v
	}
	return out
}

// healthz reports liveness and the TURN self-test.
func (a *App) healthz(w http.ResponseWriter, _ *http.Request) {
	status := "ok"
	turnState := a.selftest.snapshot()
	for _, v := range turnState {
		if v != "ok" && v != "pending" {
			status = "degraded"
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"status": status, "turn": turnState})
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// logListeners says where everything listens, for operators opening ports.
func (a *App) logListeners() {
	var media []string
	for _, u := range a.sfu.MediaAddrs() {
		media = append(media, u.String())
	}
	a.log.Info("media (UDP)", "addrs", strings.Join(media, " "))
	a.logOnePort()
	switch {
	case a.turn != nil:
		args := []any{"udp", a.turn.UDPAddr().String(), "tcp", a.turn.TCPAddr().String()}
		if tl := a.turn.TLSAddr(); tl != nil {
			args = append(args, "tls", tl.String())
		}
		a.log.Info("embedded TURN", args...)
	case a.cfg.TURNExternal != "":
		a.log.Info("external TURN", "urls", a.cfg.TURNExternal)
	default:
		a.log.Info("TURN disabled: clients behind UDP-blocking firewalls cannot call")
	}
}
