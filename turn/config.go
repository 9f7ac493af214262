package turn

import (
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"
)

// Defaults applied by New for zero-valued Config fields.
const (
	DefaultListenAddr     = ":3478"
	DefaultRealm          = "videochat"
	DefaultCredentialTTL  = 4 * time.Hour
	DefaultRelayPortMin   = 49152
	DefaultRelayPortMax   = 65535
	DefaultUserQuota      = 10
	DefaultSourceQuota    = 100
	DefaultMaxAllocations = 1000
	DefaultSetupTimeout   = 10 * time.Second
	DefaultSocketBuffer   = 2 << 20
	DefaultRelayBuffer    = 256 << 10
)

var (
	errNoPeers       = errors.New("turn: no allowed peers configured (AllowedPeers or AllowPeer)")
	errBadPeer       = errors.New("turn: allowed peer must be a unicast address with a non-zero port")
	errBadPortRange  = errors.New("turn: relay port range must be 1 <= RelayPortMin <= RelayPortMax")
	errRelayIPv4     = errors.New("turn: RelayIP must be an IPv4 address (pion/turn v4 relays over udp4 only)")
	errTLSConfig     = errors.New("turn: TLSAddr requires TLSConfig with a certificate")
	errNegativeLimit = errors.New("turn: quota and limits must not be negative")
)

// Config configures an embedded TURN server. The zero value of every field
// except the allowed peers selects a default.
type Config struct {
	// ListenAddr is the "host:port" of the UDP and TCP listeners (default
	// ":3478"). With port 0 both get an ephemeral port; the TCP listener tries
	// the UDP port first, so they usually match (see UDPAddr and TCPAddr).
	ListenAddr string
	// TLSAddr is an optional "host:port" for TURN over TLS (turns:). It
	// requires TLSConfig with at least one certificate (or GetCertificate).
	TLSAddr   string
	TLSConfig *tls.Config
	// Listeners are further listeners of TURN over TCP whose connections
	// arrive ready to carry STUN (TLS already terminated), e.g. from a
	// one-port demultiplexer. Each gets the same connection limits as the
	// TCP listener (counted separately); Close closes them.
	Listeners []net.Listener

	// Realm is the STUN realm (default "videochat").
	Realm string
	// Secret is the shared secret of coturn-compatible TURN REST credentials.
	// If empty, 32 random bytes are used (only this process can then issue
	// credentials, through ICEServers).
	Secret []byte
	// CredentialTTL is how long issued credentials stay valid (default 4h).
	// pion re-checks expiry on every Refresh, CreatePermission and
	// ChannelBind, so a relayed call cannot outlive the credentials it
	// started with by more than one allocation lifetime (at most 1h,
	// usually 10 min): the TTL must outlast the longest call. A browser
	// keeps the iceServers of its PeerConnection; the fresh ones a resume
	// reply carries apply only to a new PeerConnection or after
	// setConfiguration plus an ICE restart. 4h covers a long meeting while a
	// credential copied out of a page is useless by the evening (it was 12h).
	// This is also the effective absolute allocation lifetime limit:
	// pion/turn v4 caps each requested LIFETIME at 1h but has no knob for a
	// total lifetime.
	CredentialTTL time.Duration

	// RelayIP is the IPv4 address put in XOR-RELAYED-ADDRESS (the public IP).
	// Default: the first non-loopback IPv4 address of the host, or 127.0.0.1.
	RelayIP net.IP
	// RelayPortMin and RelayPortMax bound the relay ports (inclusive; default
	// 49152-65535 when both are zero).
	RelayPortMin, RelayPortMax uint16

	// AllowedPeers are the only endpoints relays may exchange packets with
	// (this server's own SFU media endpoints), matched exactly (IP and port;
	// IPv4-mapped IPv6 is treated as IPv4). Loopback, private, link-local and
	// other special-purpose addresses are reachable only if listed here.
	AllowedPeers []netip.AddrPort
	// AllowPeer optionally admits further public unicast endpoints; it can
	// never admit special-purpose addresses. It is called with port 0 when a
	// client asks for a permission for an IP (return true if some port on
	// that IP may be allowed), and with the real port for every packet.
	AllowPeer func(netip.AddrPort) bool

	// UserQuota caps concurrent allocations per user (default 10). The
	// user is the name in the credentials, which a visitor chooses at login
	// (or the authenticated user when auth is on), so SourceQuota is what
	// stops one host from minting names until MaxAllocations is gone.
	UserQuota int
	// SourceQuota caps concurrent allocations per client source: an IPv4
	// address or an IPv6 /64 (default 100: ten users behind one NAT at the
	// full UserQuota; a browser uses 2-6 allocations per call).
	SourceQuota int
	// MaxAllocations caps concurrent allocations in total (default 1000).
	MaxAllocations int
	// MaxConns caps concurrent TCP plus TLS client connections (default
	// 2*MaxAllocations).
	MaxConns int
	// MaxConnsPerSource caps concurrent TCP plus TLS client connections per
	// source (IPv4 address or IPv6 /64; default SourceQuota).
	MaxConnsPerSource int
	// SetupTimeout closes a TCP/TLS connection that has not completed an
	// allocation this long after it was accepted (default 10s), so
	// connections that send a STUN header and stall cannot hold the
	// connection cap. Once a connection carries an allocation, only the
	// idle timeout (11 min, longer than an allocation lifetime) applies.
	SetupTimeout time.Duration

	// SocketBuffer is SO_RCVBUF and SO_SNDBUF of the UDP listener, which
	// one goroutine reads for every client (default 2 MiB, as the SFU's
	// media socket: about 100 ms of 50 relayed calls; the kernel's default
	// of ~200 KiB overflowed at 5 calls on a busy machine).
	SocketBuffer int
	// RelayBuffer is SO_RCVBUF and SO_SNDBUF of each relay socket, which
	// carries one client's media from the SFU (default 256 KiB: a
	// keyframe burst with room to spare; memory is used only when queued).
	RelayBuffer int

	// Logger receives the server's and pion's logs (default slog.Default()).
	Logger *slog.Logger

	// channelLifetime overrides pion's channel binding lifetime (10 min)
	// in tests.
	channelLifetime time.Duration
}

// withDefaults returns a copy of c with defaults filled in and validated.
func (c Config) withDefaults() (Config, error) {
	if c.ListenAddr == "" {
		c.ListenAddr = DefaultListenAddr
	}
	if c.Realm == "" {
		c.Realm = DefaultRealm
	}
	if c.CredentialTTL <= 0 {
		c.CredentialTTL = DefaultCredentialTTL
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if err := c.defaultSecret(); err != nil {
		return c, err
	}
	if err := c.defaultLimits(); err != nil {
		return c, err
	}
	if err := c.defaultRelay(); err != nil {
		return c, err
	}
	if c.TLSAddr != "" && !hasCertificate(c.TLSConfig) {
		return c, errTLSConfig
	}
	if len(c.AllowedPeers) == 0 && c.AllowPeer == nil {
		return c, errNoPeers
	}

	return c, nil
}

func (c *Config) defaultSecret() error {
	if len(c.Secret) > 0 {
		c.Secret = append([]byte(nil), c.Secret...)

		return nil
	}
	c.Secret = make([]byte, 32)
	if _, err := rand.Read(c.Secret); err != nil {
		return fmt.Errorf("turn: generating secret: %w", err)
	}

	return nil
}

func (c *Config) defaultLimits() error {
	if c.UserQuota < 0 || c.SourceQuota < 0 || c.MaxAllocations < 0 || c.MaxConns < 0 ||
		c.MaxConnsPerSource < 0 || c.SetupTimeout < 0 || c.SocketBuffer < 0 || c.RelayBuffer < 0 {
		return errNegativeLimit
	}
	if c.UserQuota == 0 {
		c.UserQuota = DefaultUserQuota
	}
	if c.SourceQuota == 0 {
		c.SourceQuota = DefaultSourceQuota
	}
	if c.MaxConnsPerSource == 0 {
		c.MaxConnsPerSource = c.SourceQuota
	}
	if c.SetupTimeout == 0 {
		c.SetupTimeout = DefaultSetupTimeout
	}
	if c.SocketBuffer == 0 {
		c.SocketBuffer = DefaultSocketBuffer
	}
	if c.RelayBuffer == 0 {
		c.RelayBuffer = DefaultRelayBuffer
	}
	if c.MaxAllocations == 0 {
		c.MaxAllocations = DefaultMaxAllocations
	}
	if c.MaxConns == 0 {
		c.MaxConns = 2 * c.MaxAllocations
	}

	return nil
}

func (c *Config) defaultRelay() error {
	if c.RelayPortMin == 0 && c.RelayPortMax == 0 {
		c.RelayPortMin, c.RelayPortMax = DefaultRelayPortMin, DefaultRelayPortMax
	}
	if c.RelayPortMin == 0 || c.RelayPortMin > c.RelayPortMax {
		return errBadPortRange
	}
	if c.RelayIP == nil {
		c.RelayIP = defaultRelayIP()
	}
	ip4 := c.RelayIP.To4()
	if ip4 == nil {
		return errRelayIPv4
	}
	c.RelayIP = ip4

	return nil
}

func hasCertificate(cfg *tls.Config) bool {
	return cfg != nil && (len(cfg.Certificates) > 0 || cfg.GetCertificate != nil ||
		cfg.GetConfigForClient != nil)
}

// defaultRelayIP returns the first non-loopback, non-link-local IPv4 address
// of an interface that is up, or 127.0.0.1.
func defaultRelayIP() net.IP {
	ifaces, err := net.Interfaces()
	if err != nil {
		return net.IPv4(127, 0, 0, 1).To4()
	}
	for _, iface := range ifaces {
		if iface.Flags&net.FlagUp == 0 || iface.Flags&net.FlagLoopback != 0 {
			continue
		}
		if ip := firstIPv4(iface); ip != nil {
			return ip
		}
	}

	return net.IPv4(127, 0, 0, 1).To4()
}

func firstIPv4(iface net.Interface) net.IP {
	addrs, err := iface.Addrs()
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		ipNet, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip := ipNet.IP.To4()
		if ip != nil && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
			return ip
		}
	}

	return nil
}
