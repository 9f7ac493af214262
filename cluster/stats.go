package cluster

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Stats are a node's cluster numbers, for metrics.
type Stats struct {
	// Nodes counts the live nodes this one sees, itself included (0 when
	// alone); Up is whether Redis answered within the TTL.
	Nodes int
	Up    bool
	// Relayed messages: published to other nodes (Sent), delivered from
	// them (Received), and not sent (Dropped: Redis unreachable, queue
	// full, or the publish failed).
	Sent, Received, Dropped uint64
	// Redis round trips (a pipeline is one), the failed ones, and their
	// total duration (the relay stream's blocking reads left out).
	Commands, Errors uint64
	Duration         time.Duration
}

// redisCounters are updated by the client hook and the relay loops.
type redisCounters struct {
	sent, received, dropped atomic.Uint64
	commands, errors        atomic.Uint64
	nanos                   atomic.Int64
}

// counterHook counts every command and pipeline through go-redis, and
// their time unless blocking (the relay stream's reads wait for news:
// their time is no latency).
type counterHook struct {
	n        *redisCounters
	blocking bool
}

func (h counterHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h counterHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmd)
		h.observe(start, err)
		return err
	}
}

func (h counterHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		start := time.Now()
		err := next(ctx, cmds)
		h.observe(start, err)
		return err
	}
}

func (h counterHook) observe(start time.Time, err error) {
	h.n.commands.Add(1)
	if !h.blocking {
		h.n.nanos.Add(int64(time.Since(start)))
	}
	// A missing key is an answer; NOSCRIPT is the first run of a script
	// after a Redis start (go-redis then sends the script itself).
	if err != nil && !errors.Is(err, redis.Nil) && !strings.HasPrefix(err.Error(), "NOSCRIPT") {
		h.n.errors.Add(1)
	}
}

// Stats returns the node's cluster numbers.
func (r *Redis) Stats() Stats {
	r.mu.Lock()
	nodes := 1
	for node := range r.media {
		if node != r.cfg.ID {
			nodes++
		}
	}
	r.mu.Unlock()
	n := &r.n
	return Stats{Nodes: nodes, Up: r.healthy(),
		Sent: n.sent.Load(), Received: n.received.Load(), Dropped: n.dropped.Load(),
		Commands: n.commands.Load(), Errors: n.errors.Load(), Duration: time.Duration(n.nanos.Load())}
}
