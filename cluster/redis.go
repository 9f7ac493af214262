package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Config configures a Redis directory. Zero fields get the defaults noted.
type Config struct {
	URL    string // redis://[user:pass@]host:port[/db]; required
	ID     string // this node's id; random if empty
	Media  string // public media address (host:port) other nodes may need
	Prefix string // prefix of every key and channel, default "videochat:"
	// Beat is the heartbeat interval (default 1 s). A node not heard of
	// for TTL (default 5 s) is dead: its names become free and whatever
	// it shared with other nodes ends.
	Beat, TTL time.Duration
	// Sync is the least time between two presence exchanges: changes in
	// between are coalesced. Default 100 ms.
	Sync   time.Duration
	Logger *slog.Logger
}

// Redis is the Directory that shares state through one Redis server.
//
// Keys (P = Config.Prefix):
//
//	P beat            hash: node id -> last heartbeat (Redis clock, ms)
//	P info            hash: node id -> {"media":..,"ver":..} (ver counts user list changes)
//	P users:<node>    string: the node's users, one per line (TTL = lease)
//	P name:<key>      string: "<node>|<random>" of the session holding the name (its lease: the node's heartbeat)
//	P epoch           string: when Redis started serving the cluster (claims wait two heartbeats after it)
//	P names:<node>    set: the name keys the node holds (so survivors can delete a dead node's)
//	P relay:<node>    stream: messages relayed to that node, in order (stream.go)
//	P presence        pub/sub channel: "<node>" when its users changed
//
// One heartbeat is one script run, whatever the number of users: it stamps
// the node and returns every node's beat and info, so a node learns of
// deaths and presence changes in the same round trip. A name is held as
// long as its node beats (scripts.go); after a Redis restart the node
// claims its names again.
type Redis struct {
	cfg Config
	log *slog.Logger
	rdb *redis.Client
	rx  *redis.Client // the relay stream's reader (stream.go)
	ps  *redis.PubSub

	ev        Events
	startOnce sync.Once

	mu      sync.Mutex
	claims  map[string]Claim     // value -> claim held by this node
	remote  map[string][]string  // live node -> its users
	vers    map[string]string    // live node -> info version its users were fetched at
	absent  map[string]time.Time // known node missing from the registry (Redis restart?) -> since
	media   map[string]string    // live node -> its public media address
	lastOK  time.Time            // last successful heartbeat
	pushed  string               // this node's users as last written
	pushOK  bool                 // pushed is in Redis (false after a restart or error)
	ver     int64
	closed  bool
	crashed bool // Crash: nothing more is sent
	tried   bool // a heartbeat has been tried

	n redisCounters // for Stats (stats.go)

	out        chan relayMsg
	localKick  chan struct{}
	remoteKick chan struct{}
	stop       chan struct{}
	wg         sync.WaitGroup
}

type relayMsg struct {
	channel string
	payload string
}

// relayQueue bounds the messages waiting to be published.
const relayQueue = 4096

// NewRedis checks cfg and connects lazily: a Redis that is down at start
// is retried by the heartbeat.
func NewRedis(cfg Config) (*Redis, error) {
	opt, err := redis.ParseURL(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("cluster: -redis-url: %w", err)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Beat, time.Second)
	def(&cfg.TTL, 5*time.Second)
	def(&cfg.Sync, 100*time.Millisecond)
	if cfg.TTL < 2*cfg.Beat {
		return nil, errors.New("cluster: TTL must be at least two heartbeats")
	}
	if cfg.Prefix == "" {
		cfg.Prefix = "videochat:"
	}
	if cfg.ID == "" {
		cfg.ID = randomHex(6)
	}
	if strings.ContainsAny(cfg.ID, "|\n") {
		return nil, errors.New("cluster: node id must not contain | or a newline")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	// Fail fast: a Redis outage must cost a heartbeat, not stall logins.
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = cfg.TTL/2, cfg.TTL/2, cfg.TTL/2
	opt.MaxRetries = 1
	opt.DisableIdentity = true
	// Redis Enterprise/Cloud hand-off notices: plain Redis answers the
	// handshake's CLIENT MAINT_NOTIFICATIONS with an error on every new
	// connection.
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	r := &Redis{cfg: cfg, log: cfg.Logger, rdb: redis.NewClient(opt),
		claims: map[string]Claim{}, remote: map[string][]string{}, vers: map[string]string{}, absent: map[string]time.Time{},
		out: make(chan relayMsg, relayQueue), localKick: make(chan struct{}, 1),
		remoteKick: make(chan struct{}, 1), stop: make(chan struct{})}
	r.rdb.AddHook(counterHook{n: &r.n})
	r.rx = newStreamReader(opt, cfg.ID, &r.n)
	return r, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func (r *Redis) key(parts ...string) string { return r.cfg.Prefix + strings.Join(parts, ":") }

// ID is this node's id.
func (r *Redis) ID() string { return r.cfg.ID }

// Start subscribes to this node's channel and starts the heartbeat.
func (r *Redis) Start(ev Events) {
	r.startOnce.Do(func() {
		r.ev = ev
		r.ps = r.rdb.Subscribe(context.Background(), r.key("presence"))
		last := r.streamStart() // before registering: what others send from then on is read
		r.beat()                // register before serving (bounded: TTL/2 when Redis is down)
		r.wg.Add(5)
		go r.runStream(last)
		go r.runReceive()
		go r.runSend()
		go r.runBeat()
		go r.runSync()
	})
}

// Claim takes keys for a new session of this node.
func (r *Redis) Claim(ctx context.Context, keys []string) (Claim, error) {
	c := Claim{value: r.cfg.ID + "|" + randomHex(8)}
	for _, k := range keys {
		c.keys = append(c.keys, r.key("name", k))
	}
	if !r.healthy() {
		return Claim{}, ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.TTL)
	defer cancel()
	keys = append([]string{r.key("beat"), r.key("names", r.cfg.ID), r.key("epoch")}, c.keys...)
	n, err := claimScript.Run(ctx, r.rdb, keys, c.value, r.cfg.TTL.Milliseconds(), (2 * r.cfg.Beat).Milliseconds()).Int()
	if err != nil {
		r.log.Warn("cluster: claim failed", "err", err)
		return Claim{}, fmt.Errorf("%w (%v)", ErrUnavailable, err)
	}
	if n == -1 {
		return Claim{}, fmt.Errorf("%w (Redis has just started; the nodes are registering again)", ErrUnavailable)
	}
	if n == 0 {
		return Claim{}, ErrTaken
	}
	r.mu.Lock()
	r.claims[c.value] = c
	r.mu.Unlock()
	return c, nil
}

// Release gives c back (asynchronously; the lease ends it anyway).
func (r *Redis) Release(c Claim) {
	if c.value == "" {
		return
	}
	r.mu.Lock()
	_, held := r.claims[c.value]
	delete(r.claims, c.value)
	closed := r.closed
	if held && !closed {
		r.wg.Add(1) // under r.mu: before Close can wait
	}
	r.mu.Unlock()
	if !held || closed {
		return
	}
	go func() {
		defer r.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.TTL)
		defer cancel()
		if err := releaseScript.Run(ctx, r.rdb, r.releaseKeys(c), c.value).Err(); err != nil {
			r.log.Info("cluster: release failed (the lease will end it)", "err", err)
		}
	}()
}

func (r *Redis) releaseKeys(c Claim) []string {
	return append([]string{r.key("names", r.cfg.ID)}, c.keys...)
}

// LocalChanged asks for this node's users to be published soon.
func (r *Redis) LocalChanged() { kick(r.localKick) }

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// RemoteUsers returns the cached users of the other live nodes.
func (r *Redis) RemoteUsers() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, users := range r.remote {
		out = append(out, users...)
	}
	return out
}

// Peers returns the media addresses of the other live nodes.
func (r *Redis) Peers() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, 0, len(r.media))
	for node, m := range r.media {
		if _, live := r.remote[node]; live && m != "" {
			out = append(out, m)
		}
	}
	return out
}

// Alive reports whether node is another node seen alive.
func (r *Redis) Alive(node string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, live := r.remote[node]
	_, beating := r.media[node] // live at the last heartbeat
	return live || beating
}

// Locate returns the live node whose session holds key (one round trip:
// the claim, and the holder's heartbeat against Redis's clock).
func (r *Redis) Locate(ctx context.Context, key string) (string, error) {
	if !r.healthy() {
		return "", ErrUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.TTL)
	defer cancel()
	n, err := locateScript.Run(ctx, r.rdb, []string{r.key("name", key), r.key("beat")}, r.cfg.TTL.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("%w (%v)", ErrUnavailable, err)
	}
	return n, nil
}

// Send queues payload for node.
func (r *Redis) Send(node string, payload []byte) error {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed || !r.healthy() {
		r.n.dropped.Add(1)
		return ErrUnavailable
	}
	select {
	case r.out <- relayMsg{channel: r.streamKey(node), payload: r.cfg.ID + "\n" + string(payload)}:
		return nil
	default:
		r.n.dropped.Add(1)
		return fmt.Errorf("%w (relay queue full)", ErrUnavailable)
	}
}

// healthy reports whether the last heartbeat succeeded within TTL. Before
// the first heartbeat has been tried, it is optimistic.
func (r *Redis) healthy() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return !r.tried || time.Since(r.lastOK) < r.cfg.TTL
}

// Close flushes queued messages, releases this node's names and leaves
// the registry, so other nodes see it gone at once.
func (r *Redis) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	claims := make([]Claim, 0, len(r.claims))
	for _, c := range r.claims {
		claims = append(claims, c)
	}
	r.claims = map[string]Claim{}
	r.mu.Unlock()
	close(r.stop)    // runSend flushes what is queued before it returns
	_ = r.rx.Close() // ends a blocked stream read at once
	r.wg.Wait()
	var err error
	if r.ps != nil {
		_ = r.ps.Close()
		ctx, cancel := context.WithTimeout(ctx, r.cfg.TTL)
		pipe := r.rdb.Pipeline()
		for _, c := range claims {
			releaseScript.Run(ctx, pipe, r.releaseKeys(c), c.value)
		}
		pipe.HSet(ctx, r.key("beat"), r.cfg.ID, 0) // long silent: gone for everyone at once
		pipe.HDel(ctx, r.key("info"), r.cfg.ID)
		pipe.Del(ctx, r.key("users", r.cfg.ID), r.key("names", r.cfg.ID), r.streamKey(r.cfg.ID))
		pipe.Publish(ctx, r.key("presence"), r.cfg.ID)
		_, err = pipe.Exec(ctx)
		cancel()
		if err != nil {
			err = fmt.Errorf("cluster: leaving: %w", err)
		}
	}
	return errors.Join(err, r.rdb.Close())
}

// runReceive delivers presence notices (at most once: a missed one is
// made up by the full re-read every few heartbeats).
func (r *Redis) runReceive() {
	defer r.wg.Done()
	ch := r.ps.Channel()
	for {
		select {
		case <-r.stop:
			return
		case m, ok := <-ch:
			if !ok {
				return
			}
			if m.Channel == r.key("presence") && m.Payload != r.cfg.ID {
				kick(r.remoteKick)
			}
		}
	}
}

// runSend publishes queued messages in order, as pipelines of what is
// waiting; on stop it flushes the queue first.
func (r *Redis) runSend() {
	defer r.wg.Done()
	for {
		select {
		case m := <-r.out:
			r.publish(m)
		case <-r.stop:
			for {
				select {
				case m := <-r.out:
					r.publish(m)
				default:
					return
				}
			}
		}
	}
}

// xadd appends m to its stream in pipe.
func (r *Redis) xadd(ctx context.Context, pipe redis.Pipeliner, m relayMsg) {
	pipe.XAdd(ctx, &redis.XAddArgs{Stream: m.channel, MaxLen: relayStreamLen, Approx: true, Values: []any{"m", m.payload}})
}

func (r *Redis) publish(first relayMsg) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.TTL)
	defer cancel()
	pipe := r.rdb.Pipeline()
	r.xadd(ctx, pipe, first)
	for n := 1; n < 256; n++ {
		select {
		case m := <-r.out:
			r.xadd(ctx, pipe, m)
			continue
		default:
		}
		break
	}
	n := pipe.Len()
	if _, err := pipe.Exec(ctx); err != nil {
		r.n.dropped.Add(uint64(n))
		r.log.Warn("cluster: relay failed", "messages", n, "err", err)
		return
	}
	r.n.sent.Add(uint64(n))
}

// Crash stops this node's heartbeats and relays at once and drops its
// Redis connections, leaving its names and registry entry behind as a
// killed process would (for tests of node death). Close afterwards only
// finishes the local teardown.
func (r *Redis) Crash() {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return
	}
	r.closed, r.crashed = true, true
	r.mu.Unlock()
	close(r.stop)
	_ = r.rx.Close()
	_ = r.rdb.Close() // fails what is in flight; runSend drops the rest
	r.wg.Wait()
	if r.ps != nil {
		_ = r.ps.Close()
	}
}
