package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is everything the program can be told, from flags or from the
// environment (VIDEOCHAT_<FLAG>, dashes as underscores; flags win).
type Config struct {
	Addr           string // HTTP(S) listen address
	UDPPort        int    // the media port
	UDPBuffer      int    // receive/send buffer of the media socket(s), bytes
	UDPBatchRead   bool   // read the media sockets in recvmmsg batches (Linux)
	MediaReaders   int    // sockets (and reader goroutines) per media address; 0 = auto
	PionReceive    bool   // no receive fast path: all RTP through pion's readers
	PionSend       bool   // no send fast path: all RTP out through pion's SRTP session
	PionRTCP       bool   // no RTCP fast path: all RTCP through pion's readers
	NetSyscalls    bool   // media sockets read and written with net's system calls, not raw ones
	PublicIP       string // the address clients reach us at (1:1 NAT)
	TURNAddr       string // embedded TURN (UDP+TCP); empty disables
	TURNTLSAddr    string // embedded TURN over TLS (turns:), when a certificate is given
	TURNSecret     string // shared secret of the time-limited TURN credentials; random if empty
	TURNExternal   string // comma-separated URLs of an external TURN server used instead
	TURNRelayPorts string // relay port range "min-max"
	TLSCert        string // certificate and key for HTTPS and turns:
	TLSKey         string
	AllowedOrigins []string // extra origins for the WebSocket
	LogLevel       slog.Level
	RecordDir      string        // record every call into this directory; empty: off
	RecordOnFinish []string      // command and arguments run with each finished recording's path
	RecordTimeout  time.Duration // time limit of each RecordOnFinish run
	Grace          time.Duration // how long a lost connection (WebSocket or ICE) keeps its call
	RingTimeout    time.Duration // an unanswered call ends ("no answer") after this
	Limits         Limits        // per-client limits of the signaling
	ConnectTimeout time.Duration // a PeerConnection not connected this long after its description fails
	TURNCredTTL    time.Duration // lifetime of issued TURN credentials
	TURNPerIP      int           // TURN allocations (and TCP/TLS connections) per client address
	TURNSetup      time.Duration // a TURN TCP/TLS connection without an allocation by then is closed
	AuthSecret     string        // HS256 secret of login tokens (JWT); empty: no access control
	RedisURL       string        // join a cluster of nodes sharing this Redis; empty: alone
	NodeID         string        // this node's id in the cluster; random if empty
	LogFormat      string        // "text" or "json"
	MetricsAddr    string        // a separate listener for /metrics; empty: the main port, this host only
	ShutdownDelay  time.Duration // /readyz answers 503 this long before the shutdown proper
	ICETCP         bool          // passive ICE-TCP candidates on the -addr port (see app_oneport.go)
	HTTPS                        // LAN HTTPS and ACME (app_https.go)
	GC             GC            // garbage collector policy (gcpolicy.go)

	relayPorts [2]uint16 // parsed TURNRelayPorts

	// Not flags: for tests.
	IncludeLoopback bool // offer loopback media candidates (auto when the host has nothing else)
	// clusterBeat and clusterTTL replace the cluster's heartbeat interval
	// and node lifetime (defaults 1 s and 5 s).
	clusterBeat, clusterTTL time.Duration
	// bitrateSample is how often the bandwidth estimates are sampled for
	// the metrics (0: metrics.DefaultSampleInterval).
	bitrateSample time.Duration
	// wrapListener, when set, wraps the HTTP(S) listener (before TLS), e.g.
	// so a test can cut a WebSocket's TCP connection without a close frame.
	wrapListener func(net.Listener) net.Listener
}

// parseConfig reads flags (args without the program name) and environment.
func parseConfig(args []string, env func(string) (string, bool), stderr io.Writer) (Config, error) {
	var cfg Config
	var origins, level, onFinish, authFile, proxies string
	fs := flag.NewFlagSet("videochat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Addr, "addr", ":9090", "TCP listen address of everything: web app and WebSocket (HTTPS with a certificate), TURN over TCP and TLS, ICE over TCP; e.g. :443")
	fs.IntVar(&cfg.UDPPort, "udp-port", 9090, "UDP port for all media (0 = ephemeral)")
	fs.IntVar(&cfg.UDPBuffer, "udp-buffer", 2<<20, "receive and send buffer of the media socket in bytes (capped by net.core.rmem_max/wmem_max)")
	fs.BoolVar(&cfg.UDPBatchRead, "udp-batch-read", false, "read the media sockets in recvmmsg batches of up to 32 datagrams (Linux; see Performance in the README)")
	fs.IntVar(&cfg.MediaReaders, "media-readers", 0, "sockets per media address (SO_REUSEPORT, Linux), each read by its own goroutine that forwards media; 0 = GOMAXPROCS capped at 4, 1 = one socket (see Performance in the README)")
	fs.BoolVar(&cfg.PionSend, "pion-send", false, "turn the send fast path off: every RTP packet goes out through pion's SRTP session and ICE connection (for comparison; see Performance in the README)")
	fs.BoolVar(&cfg.NetSyscalls, "net-syscalls", false, "read and write the media sockets with Go's net system calls instead of raw non-blocking ones (for comparison; see Performance in the README)")
	fs.BoolVar(&cfg.PionRTCP, "pion-rtcp", false, "turn the RTCP fast path off: every RTCP packet goes through pion's readers (for comparison; see Performance in the README)")
	fs.BoolVar(&cfg.PionReceive, "pion-receive", false, "turn the receive fast path off: every RTP packet goes through pion's readers (for comparison; see Performance in the README)")
	fs.StringVar(&cfg.PublicIP, "public-ip", "", "public IP address to advertise when behind 1:1 NAT")
	fs.StringVar(&cfg.TURNAddr, "turn-addr", ":3478", "embedded TURN server address, UDP and TCP (empty disables)")
	fs.StringVar(&cfg.TURNTLSAddr, "turn-tls-addr", ":5349", "embedded TURN over TLS address, used when -tls-cert is set")
	fs.StringVar(&cfg.TURNSecret, "turn-secret", "", "shared secret for TURN credentials (coturn's static-auth-secret); random per start if empty")
	fs.StringVar(&cfg.TURNExternal, "turn-external", "", "comma-separated turn:/turns: URLs of an external TURN server (e.g. coturn with use-auth-secret) to use instead of the embedded one")
	fs.StringVar(&cfg.TURNRelayPorts, "turn-relay-ports", "49152-65535", "UDP port range for TURN relays")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate file (PEM): serve HTTPS and TURN over TLS")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "TLS private key file (PEM)")
	fs.StringVar(&origins, "allowed-origins", "", "comma-separated extra origins allowed to open the WebSocket")
	fs.StringVar(&cfg.RecordDir, "record-dir", "", "record every call: one WebM file (VP8 + Opus) per participant per call in this directory (off if empty)")
	fs.StringVar(&onFinish, "record-on-finish", "", "command run with each finished recording's path appended, e.g. \"/usr/local/bin/upload --bucket calls\" (split on spaces, no shell)")
	fs.DurationVar(&cfg.RecordTimeout, "record-on-finish-timeout", 5*time.Minute, "time limit of each -record-on-finish run; it is killed after it")
	fs.DurationVar(&cfg.Grace, "reconnect-grace", 15*time.Second, "how long a user whose connection dropped (WebSocket without a close frame, or media/ICE) keeps the call while reconnecting")
	fs.StringVar(&cfg.AuthSecret, "auth-secret", "", "require a login token: an HS256 JWT signed with this secret (at least 32 bytes), sub = user name, exp required (off if empty)")
	fs.StringVar(&authFile, "auth-secret-file", "", "read -auth-secret from this file (surrounding whitespace trimmed); keeps it off the command line")
	fs.DurationVar(&cfg.RingTimeout, "ring-timeout", 30*time.Second, "an unanswered call ends with \"no answer\" after this")
	fs.IntVar(&cfg.Limits.MaxConns, "max-conns", 10000, "open WebSockets in all (more get HTTP 503)")
	fs.IntVar(&cfg.Limits.MaxConnsPerIP, "max-conns-per-ip", 50, "open WebSockets per client address (more get HTTP 503)")
	fs.StringVar(&proxies, "trusted-proxies", "", "comma-separated networks (CIDR) of reverse proxies whose X-Forwarded-For is believed for per-address limits")
	fs.DurationVar(&cfg.Limits.LoginTimeout, "login-timeout", 10*time.Second, "a WebSocket that has not logged in (or resumed) by then is closed")
	fs.Float64Var(&cfg.Limits.MessageRate, "msg-rate", 20, "messages per second a client may send on average (burst 50); more closes it with 1008")
	fs.IntVar(&cfg.Limits.MaxCandidates, "max-candidates", 200, "ICE candidates a participant may send in one call")
	fs.IntVar(&cfg.Limits.CallAttempts, "call-attempts", 5, "calls a user may start per 30 s (20 per client address)")
	fs.DurationVar(&cfg.ConnectTimeout, "connect-timeout", 30*time.Second, "a media connection not established this long after its offer/answer ends the call")
	fs.DurationVar(&cfg.TURNCredTTL, "turn-credential-ttl", 4*time.Hour, "lifetime of the TURN credentials handed out at login (a relayed call cannot outlast them by much)")
	fs.IntVar(&cfg.TURNPerIP, "turn-per-ip", 100, "TURN allocations, and TURN TCP/TLS connections, per client IP address (IPv6: per /64)")
	fs.DurationVar(&cfg.TURNSetup, "turn-setup-timeout", 10*time.Second, "a TURN TCP/TLS connection that has not allocated a relay by then is closed")
	fs.StringVar(&cfg.RedisURL, "redis-url", "", "join a cluster: nodes sharing this Redis (redis://host:6379/0) share names, presence and calls; empty: run alone")
	fs.StringVar(&cfg.NodeID, "node-id", "", "this node's id in the cluster (random per start if empty)")
	fs.BoolVar(&cfg.ICETCP, "ice-tcp", true, "offer ICE over TCP to the SFU on the -addr port (for clients whose network blocks UDP)")
	httpsFlags(fs, &cfg.HTTPS)
	fs.StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "log format: text (key=value) or json (one JSON object per line)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "serve Prometheus /metrics (and /healthz, /readyz) on this address, e.g. 127.0.0.1:9091; if empty, /metrics is served on -addr to this host only")
	fs.IntVar(&cfg.GC.Percent, "gc-percent", defaultGCPercent, "the garbage collector's GOGC: heap growth allowed between collections, percent of the live heap (lower: less memory, more GC CPU; the GOGC environment variable wins over the default)")
	fs.Int64Var(&cfg.GC.MemoryLimit, "memory-limit", 0, "soft memory limit of the Go runtime in MiB, like GOMEMLIMIT (0: none; the GOMEMLIMIT environment variable wins over the default)")
	fs.DurationVar(&cfg.ShutdownDelay, "shutdown-delay", 0, "on SIGTERM, answer /readyz with 503 for this long before shutting down (e.g. 5s behind a load balancer)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: videochat [flags]\n\nEvery flag can also be set as VIDEOCHAT_<FLAG> (e.g. VIDEOCHAT_ADDR).\n\n")
		fs.PrintDefaults()
	}
	var envErr error
	explicit := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		name := "VIDEOCHAT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := env(name); ok {
			explicit[f.Name] = true
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return cfg, envErr
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	cfg.GC.percentSet, cfg.GC.limitSet = explicit["gc-percent"], explicit["memory-limit"]
	if cfg.GC.MemoryLimit < 0 {
		return cfg, errors.New("-memory-limit must not be negative")
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return cfg, fmt.Errorf("-log-level: %w", err)
	}
	if cfg.LogFormat != "text" && cfg.LogFormat != "json" {
		return cfg, fmt.Errorf("-log-format %q: want text or json", cfg.LogFormat)
	}
	if cfg.ShutdownDelay < 0 {
		return cfg, errors.New("-shutdown-delay must not be negative")
	}
	if cfg.MediaReaders < 0 || cfg.MediaReaders > 64 {
		return cfg, errors.New("-media-readers must be 0..64")
	}
	if cfg.UDPBuffer < 0 {
		return cfg, errors.New("-udp-buffer must not be negative")
	}
	if cfg.UDPPort < 0 || cfg.UDPPort > 65535 {
		return cfg, errors.New("-udp-port must be 0..65535")
	}
	if (cfg.TLSCert == "") != (cfg.TLSKey == "") {
		return cfg, errors.New("-tls-cert and -tls-key go together")
	}
	if cfg.PublicIP != "" && net.ParseIP(cfg.PublicIP) == nil {
		return cfg, fmt.Errorf("-public-ip %q is not an IP address", cfg.PublicIP)
	}
	var err error
	if cfg.relayPorts, err = parsePortRange(cfg.TURNRelayPorts); err != nil {
		return cfg, fmt.Errorf("-turn-relay-ports: %w", err)
	}
	cfg.AllowedOrigins = splitList(origins)
	cfg.RecordOnFinish = strings.Fields(onFinish)
	if len(cfg.RecordOnFinish) > 0 && cfg.RecordDir == "" {
		return cfg, errors.New("-record-on-finish needs -record-dir")
	}
	if cfg.Grace <= 0 || cfg.RingTimeout <= 0 || cfg.ConnectTimeout <= 0 || cfg.TURNCredTTL <= 0 || cfg.TURNSetup <= 0 {
		return cfg, errors.New("-reconnect-grace, -ring-timeout, -connect-timeout, -turn-credential-ttl and -turn-setup-timeout must be positive")
	}
	if cfg.Limits.TrustedProxies, err = parsePrefixes(proxies); err != nil {
		return cfg, fmt.Errorf("-trusted-proxies: %w", err)
	}
	l := cfg.Limits
	if l.MaxConns <= 0 || l.MaxConnsPerIP <= 0 || l.LoginTimeout <= 0 || l.MessageRate <= 0 || l.MaxCandidates <= 0 || l.CallAttempts <= 0 {
		return cfg, errors.New("-max-conns, -max-conns-per-ip, -login-timeout, -msg-rate, -max-candidates and -call-attempts must be positive")
	}
	if cfg.TURNPerIP <= 0 {
		return cfg, errors.New("-turn-per-ip must be positive")
	}
	if cfg.RecordTimeout <= 0 {
		return cfg, errors.New("-record-on-finish-timeout must be positive")
	}
	if cfg.AuthSecret, err = authSecret(cfg.AuthSecret, authFile); err != nil {
		return cfg, err
	}
	if err := cfg.HTTPS.check(cfg.TLSCert != ""); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// authSecret returns the secret of -auth-secret or -auth-secret-file.
// RFC 7518 asks HS256 keys for at least 256 bits.
func authSecret(secret, file string) (string, error) {
	if file != "" {
		if secret != "" {
			return "", errors.New("-auth-secret and -auth-secret-file: give one, not both")
		}
		b, err := os.ReadFile(file)
		if err != nil {
			return "", fmt.Errorf("-auth-secret-file: %w", err)
		}
		if secret = strings.TrimSpace(string(b)); secret == "" {
			return "", fmt.Errorf("-auth-secret-file: %s is empty", file)
		}
	}
	if secret != "" && len(secret) < 32 {
		return "", errors.New("-auth-secret must be at least 32 bytes (HS256 needs a 256-bit key; e.g. openssl rand -hex 32)")
	}
	return secret, nil
}

// Limits are the signaling's per-client limits that have flags.
type Limits struct {
	MaxConns, MaxConnsPerIP int
	TrustedProxies          []netip.Prefix
	LoginTimeout            time.Duration
	MessageRate             float64
	MaxCandidates           int
	CallAttempts            int
	CallAttemptsPerIP       int // no flag; 0: the signaling's default (20)
}

func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, v := range splitList(s) {
		p, err := netip.ParsePrefix(v)
		if err != nil {
			return nil, err
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

func parsePortRange(s string) ([2]uint16, error) {
	lo, hi, ok := strings.Cut(s, "-")
	a, err1 := strconv.ParseUint(strings.TrimSpace(lo), 10, 16)
	b, err2 := strconv.ParseUint(strings.TrimSpace(hi), 10, 16)
	if !ok || err1 != nil || err2 != nil || a == 0 || a > b {
		return [2]uint16{}, fmt.Errorf("%q is not a range like 49152-65535", s)
	}
	return [2]uint16{uint16(a), uint16(b)}, nil
}

func envLookup(name string) (string, bool) { return os.LookupEnv(name) }
