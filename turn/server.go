// Package turn embeds a pion/turn v4 TURN server so browser calls work behind
// UDP-blocking firewalls. Relays may only reach this server's own media
// endpoints (Config.AllowedPeers); credentials are coturn-compatible TURN
// REST credentials; allocations are limited per user and in total.
package turn

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	pturn "github.com/pion/turn/v4"
)

// closeTimeout bounds how long Close waits for relay sockets to close.
const closeTimeout = 5 * time.Second

// Server is an embedded TURN server. Create it with New; it is safe for
// concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	pion   *pturn.Server
	relays *relayGenerator
	fast   *fastPath
	quota  *quota

	udp net.PacketConn
	tcp *connListener
	tls *connListener   // nil if TLS is disabled
	ext []*connListener // Config.Listeners

	closeOnce sync.Once
	closeErr  error
	logGate   logGate
}

var _ ICEServerSource = (*Server)(nil)

// New starts a TURN server listening on cfg.ListenAddr (UDP and TCP) and,
// if configured, cfg.TLSAddr.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	filter, err := newPeerFilter(cfg.AllowedPeers, cfg.AllowPeer)
	if err != nil {
		return nil, err
	}
	relays, err := newRelayGenerator(cfg, filter)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, relays: relays, quota: newQuota(cfg.UserQuota, cfg.SourceQuota, cfg.MaxAllocations)}
	if err := s.listen(); err != nil {
		s.closeSockets()

		return nil, err
	}
	s.fast = newFastPath(s.udp, relays)
	if err := s.startPion(filter); err != nil {
		s.closeSockets()

		return nil, err
	}

	return s, nil
}

// listen opens the UDP, TCP and optional TLS sockets.
func (s *Server) listen() error {
	udp, err := net.ListenPacket("udp", s.cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("turn: listen udp %s: %w", s.cfg.ListenAddr, err)
	}
	s.udp = udp
	if uc, ok := udp.(*net.UDPConn); ok {
		_ = uc.SetReadBuffer(s.cfg.SocketBuffer)
		_ = uc.SetWriteBuffer(s.cfg.SocketBuffer)
	}
	tcp, err := listenTCPNear(s.cfg.ListenAddr, udp.LocalAddr())
	if err != nil {
		return err
	}
	s.tcp = newConnListener(tcp, s.cfg)
	for _, l := range s.cfg.Listeners {
		s.ext = append(s.ext, newConnListener(l, s.cfg))
	}
	if s.cfg.TLSAddr == "" {
		return nil
	}
	raw, err := net.Listen("tcp", s.cfg.TLSAddr)
	if err != nil {
		return fmt.Errorf("turn: listen tls %s: %w", s.cfg.TLSAddr, err)
	}
	s.tls = newConnListener(raw, s.cfg)

	return nil
}

// listenTCPNear listens on addr; if addr has port 0 it first tries the port
// the UDP socket got, so both transports share a port when possible.
func listenTCPNear(addr string, udpAddr net.Addr) (net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("turn: bad ListenAddr %q: %w", addr, err)
	}
	if ua, ok := udpAddr.(*net.UDPAddr); ok && (port == "0" || port == "") {
		if l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(ua.Port))); err == nil {
			return l, nil
		}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("turn: listen tcp %s: %w", addr, err)
	}

	return l, nil
}

func (s *Server) startPion(filter *peerFilter) error {
	listeners := []pturn.ListenerConfig{s.listenerConfig(s.tcp, filter)}
	if s.tls != nil {
		// Deadlines and tracking sit below TLS, on the raw TCP connections.
		lc := s.listenerConfig(s.tls, filter)
		lc.Listener = reasonListener{tls.NewListener(s.tls, s.cfg.TLSConfig)}
		listeners = append(listeners, lc)
	}
	for _, l := range s.ext {
		listeners = append(listeners, s.listenerConfig(l, filter))
	}
	srv, err := pturn.NewServer(pturn.ServerConfig{
		Realm:              s.cfg.Realm,
		ChannelBindTimeout: s.cfg.channelLifetime,
		AuthHandler:        restAuthHandler(s.cfg.Secret, s.cfg.Realm, s.log),
		QuotaHandler:       s.quota.allow,
		EventHandler:       s.eventHandler(),
		LoggerFactory:      pionLoggerFactory{log: s.log, gate: &s.logGate},
		PacketConnConfigs: []pturn.PacketConnConfig{{
			PacketConn:            s.udpPacketConn(),
			RelayAddressGenerator: s.relays,
			PermissionHandler:     filter.permissionHandler,
		}},
		ListenerConfigs: listeners,
	})
	if err != nil {
		return fmt.Errorf("turn: starting pion server: %w", err)
	}
	s.pion = srv

	return nil
}

// udpPacketConn is the UDP listener as pion gets it: with the fast path
// when it is a *net.UDPConn.
func (s *Server) udpPacketConn() net.PacketConn {
	if s.fast.udp != nil {
		return udpListener{UDPConn: s.fast.udp, fast: s.fast}
	}
	return reasonPacketConn{s.udp}
}

func (s *Server) listenerConfig(l net.Listener, filter *peerFilter) pturn.ListenerConfig {
	return pturn.ListenerConfig{
		Listener:              reasonListener{l},
		RelayAddressGenerator: s.relays,
		PermissionHandler:     filter.permissionHandler,
	}
}

// eventHandler counts allocations for the quota and logs their lifecycle.
func (s *Server) eventHandler() pturn.EventHandler {
	h := s.quota.eventHandler()
	created, deleted := h.OnAllocationCreated, h.OnAllocationDeleted
	h.OnAllocationCreated = func(src, dst net.Addr, proto, user, realm string, relay net.Addr, port int) {
		created(src, dst, proto, user, realm, relay, port)
		s.fast.allocationCreated(src, dst, relay)
		s.tcp.allocated(src)
		if s.tls != nil {
			s.tls.allocated(src)
		}
		for _, l := range s.ext {
			l.allocated(src)
		}
		s.log.Debug("turn: allocation created", "remote", addrString(src), "user", user, "relay", addrString(relay))
	}
	h.OnAllocationDeleted = func(src, dst net.Addr, proto, user, realm string) {
		deleted(src, dst, proto, user, realm)
		s.fast.allocationDeleted(src, dst)
		s.log.Debug("turn: allocation deleted", "remote", addrString(src), "user", user)
	}

	h.OnChannelCreated = func(_, _ net.Addr, _, _, _ string, relay, peer net.Addr, number uint16) {
		s.fast.channelCreated(relay, peer, number)
	}
	h.OnChannelDeleted = func(_, _ net.Addr, _, _, _ string, relay, _ net.Addr, number uint16) {
		s.fast.channelDeleted(relay, number)
	}

	return h
}

// closeSockets closes whatever listen opened (used when New fails).
func (s *Server) closeSockets() {
	if s.udp != nil {
		_ = s.udp.Close()
	}
	if s.tcp != nil {
		_ = s.tcp.Close()
	}
	if s.tls != nil {
		_ = s.tls.Close()
	}
	for _, l := range s.ext {
		_ = l.Close()
	}
}

// Close stops the server, closes all client connections and relays, and
// waits (up to 5 s) until every relay socket and allocation is gone. It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if err := s.pion.Close(); err != nil {
			errs = append(errs, fmt.Errorf("turn: closing pion server: %w", err))
		}
		// pion closes allocations asynchronously; wait for relay sockets
		// and allocation records to be gone so callers see a quiet server.
		if !waitUntil(closeTimeout, func() bool {
			return s.relays.openRelays() == 0 && s.pion.AllocationCount() == 0
		}) {
			errs = append(errs, fmt.Errorf("%w: %d relays, %d allocations", errRelaysNotClosed,
				s.relays.openRelays(), s.pion.AllocationCount()))
		}
		s.closeErr = errors.Join(errs...)
		s.logGate.close()
	})

	return s.closeErr
}

// UDPAddr returns the address of the UDP listener.
func (s *Server) UDPAddr() *net.UDPAddr {
	a, _ := s.udp.LocalAddr().(*net.UDPAddr)

	return a
}

// TCPAddr returns the address of the TCP listener.
func (s *Server) TCPAddr() *net.TCPAddr {
	a, _ := s.tcp.Addr().(*net.TCPAddr)

	return a
}

// TLSAddr returns the address of the TLS listener, or nil if TLS is disabled.
func (s *Server) TLSAddr() net.Addr {
	if s.tls == nil {
		return nil
	}

	return s.tls.Addr()
}

// Stats are the server's counters since it started.
type Stats struct {
	Allocations      int    // active allocations now
	AllocationsTotal uint64 // relay sockets allocated since the start
	// Relayed payload between clients and peers: ToPeer is what clients
	// sent through their relays, FromPeer what peers sent back.
	ToPeerBytes, ToPeerPackets     uint64
	FromPeerBytes, FromPeerPackets uint64
	// Denied counts packets dropped because the peer is not allowed.
	Denied uint64
}

// Stats returns the current counters; it costs a few atomic loads.
func (s *Server) Stats() Stats {
	r := &s.relays.relayed
	return Stats{
		Allocations:      s.pion.AllocationCount(),
		AllocationsTotal: r.allocations.Load(),
		ToPeerBytes:      r.toPeerBytes.Load(), ToPeerPackets: r.toPeerPackets.Load(),
		FromPeerBytes: r.fromPeerBytes.Load(), FromPeerPackets: r.fromPeerPackets.Load(),
		Denied: r.denied.Load(),
	}
}

// AllocationCount returns the number of active allocations.
func (s *Server) AllocationCount() int {
	return s.pion.AllocationCount()
}

// ICEServers implements ICEServerSource: a stun: URL and turn: URLs for UDP
// and TCP (plus turns: when TLS is on) at host, with credentials valid for
// Config.CredentialTTL. An empty host means RelayIP. It returns nil if host
// is neither an IP address nor a DNS name.
func (s *Server) ICEServers(user, host string) []ICEServer {
	if host == "" {
		host = s.cfg.RelayIP.String()
	}
	h, ok := urlHost(host)
	if !ok {
		return nil
	}
	tlsPort := 0
	if ta, ok := s.TLSAddr().(*net.TCPAddr); ok {
		tlsPort = ta.Port
	}
	stun, turnURLs := iceURLs(h, s.UDPAddr().Port, s.TCPAddr().Port, tlsPort)
	username, password := Credentials(s.cfg.Secret, user, s.cfg.CredentialTTL, time.Now())

	return []ICEServer{
		{URLs: []string{stun}},
		{URLs: turnURLs, Username: username, Credential: password},
	}
}
