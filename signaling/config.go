package signaling

import (
	"log/slog"
	"net/netip"
	"time"

	"videochat/cluster"
)

// Config configures a Server. Zero fields get the defaults noted.
type Config struct {
	Media Media // required
	// ICEServers returns the ICE servers a user gets at login; host is the
	// host name the client used to reach us. May be nil.
	ICEServers func(user, host string) []ICEServer
	// AllowedOrigins admits pages from these origins (scheme://host[:port])
	// besides the server's own.
	AllowedOrigins []string
	// Recording tells clients that calls are recorded (they show it).
	Recording      bool
	RingTimeout    time.Duration // no-answer timeout, default 30 s
	MaxMessageSize int64         // default 256 KiB; bigger frames close with 1009
	SendQueue      int           // frames queued per client, default 64
	WriteTimeout   time.Duration // default 10 s
	PingInterval   time.Duration // default 15 s
	PongTimeout    time.Duration // no frame or pong for this long drops the client, default 45 s
	// ResumeGrace is how long a session whose WebSocket was lost without a
	// close frame is held for a resume, default 15 s.
	ResumeGrace time.Duration
	// ResumeQueue bounds the frames queued for a detached session; more
	// end the session. Default 256.
	ResumeQueue int
	Logger      *slog.Logger
	// AuthSecret turns access control on: login then needs a token, an
	// HS256 JWT signed with this secret whose sub is the name (auth.go).
	// Empty: anyone may log in with any free name.
	AuthSecret []byte
	// OnMediaConnected, if set, hears when a participant's media first
	// connects: leg is "caller" or "callee", setup the time from its
	// offer (caller) or answer (callee) to connected. It must not block.
	OnMediaConnected func(leg string, setup time.Duration)

	// Limits (issue 10). Each is refused or closed with a message a person
	// can act on; nothing a client does affects other clients.

	// MessageRate and MessageBurst: a token bucket of client frames per
	// connection; a client that exceeds it is closed with 1008 (policy
	// violation). Defaults 20/s, burst 50 (less than SendQueue, so that a
	// burst of requests is refused before its replies overflow the queue).
	MessageRate  float64
	MessageBurst int
	// LoginTimeout closes (1008) a connection that has neither logged in
	// nor resumed this long after connecting. Default 10 s.
	LoginTimeout time.Duration
	// MaxConns and MaxConnsPerIP cap open WebSockets in total and per
	// client address; more are refused with HTTP 503 before the upgrade.
	// Defaults 10,000 and 50.
	MaxConns      int
	MaxConnsPerIP int
	// TrustedProxies: when a connection comes from one of these networks,
	// its client address is taken from X-Forwarded-For (the nearest entry
	// that is not itself a trusted proxy). Empty (the default): the header
	// is ignored.
	TrustedProxies []netip.Prefix
	// MaxCandidates bounds the ICE candidates one participant may send in
	// one call (before and after its offer); more get an error and are
	// ignored. Default 200.
	MaxCandidates int
	// MaxSDPSize and MaxSDPMediaSections bound an offer's or answer's SDP
	// before the SFU parses it. Defaults 64 KiB and 16 m= lines.
	MaxSDPSize          int
	MaxSDPMediaSections int
	// CallAttempts per CallWindow per caller (and CallAttemptsPerIP per
	// client address) are allowed; more get an error saying how long to
	// wait. Defaults 5 per 30 s, 20 per address.
	CallAttempts      int
	CallAttemptsPerIP int
	CallWindow        time.Duration
	// DeclinedRingTimeout replaces RingTimeout for a call to someone who
	// declined (or did not answer) the same caller within DeclineMemory,
	// so a stranger who keeps calling cannot keep them busy. Defaults 5 s
	// and 5 min.
	DeclinedRingTimeout time.Duration
	DeclineMemory       time.Duration
	// PresenceInterval: users lists go out at most this often (changes in
	// between are coalesced). Default 250 ms.
	PresenceInterval time.Duration
	// PresenceTotalInterval: a change that leaves the (capped) list as it
	// was and changes only "total" goes out at most this often. Default 2 s.
	PresenceTotalInterval time.Duration
	// MaxUsersListed caps the names in a users list (the first in sorted
	// order; "total" gives the count). Default 100.
	MaxUsersListed int

	// Cluster shares names, presence and calls with other nodes
	// (cluster.go, relay.go). Nil: this node is alone (cluster.Alone).
	Cluster cluster.Directory

	// now is the clock of the limiters; tests replace it.
	now func() time.Time

	// afterFunc starts the grace timers (time.AfterFunc); tests replace it.
	afterFunc func(time.Duration, func()) stopper
	// authNow is the clock for token expiry (time.Now); tests replace it.
	authNow func() time.Time
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.RingTimeout, 30*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	def(&c.PingInterval, 15*time.Second)
	def(&c.PongTimeout, 45*time.Second)
	def(&c.ResumeGrace, 15*time.Second)
	if c.ResumeQueue <= 0 {
		c.ResumeQueue = 256
	}
	defInt := func(n *int, v int) {
		if *n <= 0 {
			*n = v
		}
	}
	if c.MessageRate <= 0 {
		c.MessageRate = 20
	}
	defInt(&c.MessageBurst, 50) // below SendQueue: a burst of requests cannot overflow the replies
	def(&c.LoginTimeout, 10*time.Second)
	defInt(&c.MaxConns, 10000)
	defInt(&c.MaxConnsPerIP, 50)
	defInt(&c.MaxCandidates, 200)
	defInt(&c.MaxSDPSize, 64<<10)
	defInt(&c.MaxSDPMediaSections, 16)
	defInt(&c.CallAttempts, 5)
	defInt(&c.CallAttemptsPerIP, 20)
	def(&c.CallWindow, 30*time.Second)
	def(&c.DeclinedRingTimeout, 5*time.Second)
	def(&c.DeclineMemory, 5*time.Minute)
	def(&c.PresenceInterval, 250*time.Millisecond)
	def(&c.PresenceTotalInterval, 2*time.Second)
	defInt(&c.MaxUsersListed, 100)
	if c.now == nil {
		c.now = time.Now
	}
	if c.afterFunc == nil {
		c.afterFunc = realAfter
	}
	if c.MaxMessageSize <= 0 {
		c.MaxMessageSize = 256 << 10
	}
	if c.SendQueue <= 0 {
		c.SendQueue = 64
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.ICEServers == nil {
		c.ICEServers = func(string, string) []ICEServer { return nil }
	}
	if c.Cluster == nil {
		c.Cluster = cluster.Alone{}
	}
}
