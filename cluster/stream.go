package cluster

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Relayed messages travel in one Redis stream per receiving node
// (P relay:<node>), not on pub/sub: pub/sub delivers at most once, so a
// message published while the receiver's subscription reconnects is lost;
// a stream keeps it, and the receiver reads on from the last entry it
// handled. Every sender appends in order, so each sender's messages reach
// a node in the order sent. The stream is capped (relayStreamLen, about);
// a dead node's is deleted by the survivors with its names.

// relayStreamLen caps a node's stream (approximately): a receiver that
// falls this far behind loses the oldest.
const relayStreamLen = 10000

// streamBlock is how long one read waits for new entries; Close ends a
// read at once by closing the reader's connection.
const streamBlock = 5 * time.Second

// streamRetry paces reads again after an error (Redis down, connection
// killed): at first quickly, then doubling up to streamRetryMax.
const streamRetry, streamRetryMax = 50 * time.Millisecond, 2 * time.Second

func (r *Redis) streamKey(node string) string { return r.key("relay", node) }

// streamStart returns the id after which this node reads its stream: its
// last entry (older ones were for an earlier run of this node id), "0-0"
// when it has none, "" when Redis cannot say (asked again later).
func (r *Redis) streamStart() string {
	ctx, cancel := r.ctx()
	defer cancel()
	last, err := r.rx.XRevRangeN(ctx, r.streamKey(r.cfg.ID), "+", "-", 1).Result()
	switch {
	case err != nil:
		return ""
	case len(last) == 0:
		return "0-0"
	}
	return last[0].ID
}

// runStream delivers the messages of this node's stream in order until
// stop.
func (r *Redis) runStream(last string) {
	defer r.wg.Done()
	key := r.streamKey(r.cfg.ID)
	retry := streamRetry
	backoff := func() {
		r.pause(retry)
		retry = min(2*retry, streamRetryMax)
	}
	for {
		select {
		case <-r.stop:
			return
		default:
		}
		if last == "" {
			if last = r.streamStart(); last == "" {
				backoff()
				continue
			}
		}
		res, err := r.rx.XRead(context.Background(), &redis.XReadArgs{
			Streams: []string{key, last}, Count: 256, Block: streamBlock}).Result()
		if errors.Is(err, redis.Nil) {
			retry = streamRetry
			continue // nothing new within streamBlock
		}
		if err != nil {
			backoff()
			continue
		}
		retry = streamRetry
		for _, s := range res {
			for _, m := range s.Messages {
				last = m.ID
				v, _ := m.Values["m"].(string)
				if from, payload, ok := strings.Cut(v, "\n"); ok {
					r.n.received.Add(1)
					r.ev.Deliver(from, []byte(payload))
				}
			}
		}
	}
}

// pause waits d or until stop.
func (r *Redis) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-r.stop:
	case <-t.C:
	}
}

// newStreamReader is the client of the stream reader: one connection of
// its own (a blocking read holds it), named so that tests can find it.
func newStreamReader(opt *redis.Options, id string, n *redisCounters) *redis.Client {
	o := *opt
	o.PoolSize, o.MinIdleConns, o.MaxIdleConns = 1, 0, 1
	o.ClientName = "videochat-relay-" + id
	c := redis.NewClient(&o)
	c.AddHook(counterHook{n: n, blocking: true})
	return c
}
