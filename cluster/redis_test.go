package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"videochat/internal/redistest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// events records what a Directory tells its node.
type events struct {
	mu        sync.Mutex
	local     []string
	delivered []string
	down      []string
	changed   chan struct{}
}

func newEvents(local ...string) *events {
	return &events{local: local, changed: make(chan struct{}, 1)}
}

func (e *events) LocalUsers() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.local)
}
func (e *events) PresenceChanged() { kick(e.changed) }
func (e *events) Deliver(from string, p []byte) {
	e.mu.Lock()
	e.delivered = append(e.delivered, from+":"+string(p))
	e.mu.Unlock()
	kick(e.changed)
}
func (e *events) NodeDown(node string) {
	e.mu.Lock()
	e.down = append(e.down, node)
	e.mu.Unlock()
	kick(e.changed)
}

func (e *events) until(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.After(d)
	for {
		e.mu.Lock()
		ok := cond()
		e.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-e.changed:
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("no %s within %v", what, d)
		}
	}
}

func node(t *testing.T, url, id string, ev *events) *Redis {
	t.Helper()
	r, err := NewRedis(Config{URL: url, ID: id, Beat: 250 * time.Millisecond, TTL: 1500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	r.Start(ev)
	t.Cleanup(func() { _ = r.Close(context.Background()) })
	waitHealthy(t, r)
	return r
}

func waitHealthy(t *testing.T, r *Redis) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !r.healthy(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: no heartbeat", r.ID())
		}
	}
}

func TestClaimIsExclusiveAndLeased(t *testing.T) {
	rs := redistest.Start(t)
	a := node(t, rs.URL(), "a", newEvents())
	b := node(t, rs.URL(), "b", newEvents())
	ctx := context.Background()
	c, err := a.Claim(ctx, []string{"n:alice", "f:alice"})
	if err != nil {
		t.Fatal(err)
	}
	// Any shared key refuses, on any node, the holder's node included.
	for _, r := range []*Redis{a, b} {
		if _, err := r.Claim(ctx, []string{"n:Alice", "f:alice"}); !errors.Is(err, ErrTaken) {
			t.Fatalf("%s: second claim: %v", r.ID(), err)
		}
	}
	if n, err := b.Locate(ctx, "n:alice"); n != "a" || err != nil {
		t.Fatalf("locate: %q %v", n, err)
	}
	// The heartbeat keeps the lease beyond its TTL.
	time.Sleep(3 * a.cfg.TTL)
	if _, err := b.Claim(ctx, []string{"f:alice"}); !errors.Is(err, ErrTaken) {
		t.Fatalf("after 3 TTLs: %v", err)
	}
	a.Release(c)
	waitClaim(t, b, "f:alice")
}

func waitClaim(t *testing.T, r *Redis, keys ...string) time.Duration {
	t.Helper()
	start := time.Now()
	for deadline := start.Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		c, err := r.Claim(context.Background(), keys)
		if err == nil {
			r.Release(c)
			return time.Since(start)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v still refused: %v", r.ID(), keys, err)
		}
	}
}

func TestCrashedNodeIsGone(t *testing.T) {
	rs := redistest.Start(t)
	evA, evB := newEvents("alice"), newEvents("bob")
	a := node(t, rs.URL(), "a", evA)
	b := node(t, rs.URL(), "b", evB)
	if _, err := a.Claim(context.Background(), []string{"n:alice"}); err != nil {
		t.Fatal(err)
	}
	evB.until(t, 2*time.Second, func() bool { return slices.Equal(b.RemoteUsers(), []string{"alice"}) }, "presence of a")
	a.Crash()
	start := time.Now()
	evB.until(t, 5*time.Second, func() bool { return slices.Contains(evB.down, "a") }, "node a down")
	t.Logf("crash noticed after %v (TTL %v, beat %v)", time.Since(start), b.cfg.TTL, b.cfg.Beat)
	if u := b.RemoteUsers(); len(u) != 0 {
		t.Fatalf("a's users still listed: %v", u)
	}
	if n, _ := b.Locate(context.Background(), "n:alice"); n != "" {
		t.Fatalf("locate on a dead node: %q", n)
	}
	waitClaim(t, b, "n:alice")
	t.Logf("alice free again %v after the crash", time.Since(start))
}

func TestRelayKeepsOrder(t *testing.T) {
	rs := redistest.Start(t)
	evB := newEvents()
	a := node(t, rs.URL(), "a", newEvents())
	node(t, rs.URL(), "b", evB)
	const n = 2000
	for i := range n {
		for a.Send("b", []byte(strconv.Itoa(i))) != nil {
			time.Sleep(time.Millisecond) // queue full: wait for the sender
		}
	}
	evB.until(t, 10*time.Second, func() bool { return len(evB.delivered) == n }, fmt.Sprintf("%d messages", n))
	for i, m := range evB.delivered {
		if m != "a:"+strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, m)
		}
	}
}

func TestRedisRestartHeals(t *testing.T) {
	rs := redistest.Start(t)
	evA, evB := newEvents("alice"), newEvents("bob")
	a := node(t, rs.URL(), "a", evA)
	b := node(t, rs.URL(), "b", evB)
	if _, err := a.Claim(context.Background(), []string{"n:alice"}); err != nil {
		t.Fatal(err)
	}
	evB.until(t, 2*time.Second, func() bool { return slices.Equal(b.RemoteUsers(), []string{"alice"}) }, "presence of a")
	rs.Stop()
	evB.until(t, 8*time.Second, func() bool { return slices.Contains(evB.down, "a") }, "a unreachable")
	if _, err := b.Claim(context.Background(), []string{"n:x"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim while Redis is down: %v", err)
	}
	if err := b.Send("a", []byte("x")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("send while Redis is down: %v", err)
	}
	rs.Restart()
	start := time.Now()
	evB.until(t, 5*time.Second, func() bool { return slices.Equal(b.RemoteUsers(), []string{"alice"}) }, "presence after the restart")
	evA.until(t, 5*time.Second, func() bool { return slices.Equal(a.RemoteUsers(), []string{"bob"}) }, "presence after the restart")
	t.Logf("presence back %v after Redis", time.Since(start))
	// alice's claim was re-created by a's heartbeat; other claims wait
	// until every node has had two heartbeats to do so.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := b.Claim(context.Background(), []string{"n:alice"})
		if errors.Is(err, ErrTaken) {
			break
		}
		if !errors.Is(err, ErrUnavailable) || time.Now().After(deadline) {
			t.Fatalf("alice after the restart: %v", err)
		}
	}
}

// A Redis restart shorter than the TTL ends nothing: no node is taken for
// dead, names and presence come back.
func TestShortRedisRestartEndsNothing(t *testing.T) {
	rs := redistest.Start(t)
	evA, evB := newEvents("alice"), newEvents("bob")
	a := node(t, rs.URL(), "a", evA)
	b := node(t, rs.URL(), "b", evB)
	if _, err := a.Claim(context.Background(), []string{"n:alice"}); err != nil {
		t.Fatal(err)
	}
	evB.until(t, 2*time.Second, func() bool { return slices.Equal(b.RemoteUsers(), []string{"alice"}) }, "presence of a")
	rs.Stop()
	rs.Restart()
	// Right after the restart, before every node has beaten and claimed
	// its names again, claims wait; then alice is a's again.
	if _, err := b.Claim(context.Background(), []string{"n:alice"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim right after the restart: %v", err)
	}
	waitHealthy(t, b)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		_, err := b.Claim(context.Background(), []string{"n:alice"})
		if errors.Is(err, ErrTaken) {
			break
		}
		if err == nil || time.Now().After(deadline) {
			t.Fatalf("claim of alice after the restart: %v", err)
		}
	}
	time.Sleep(2 * b.cfg.TTL) // nothing may happen meanwhile: no event to wait for
	evB.mu.Lock()
	down := slices.Clone(evB.down)
	evB.mu.Unlock()
	if len(down) != 0 {
		t.Fatalf("nodes taken for dead after a short restart: %v", down)
	}
	if !slices.Equal(b.RemoteUsers(), []string{"alice"}) {
		t.Fatalf("presence after the restart: %v", b.RemoteUsers())
	}
}

// TestRelaySurvivesReconnects: the receiver's connection is killed again
// and again (as by a network blip or a proxy restart) while messages are
// relayed to it; it reads on from where it was, so none is lost and the
// order holds (pub/sub would lose what was published while it
// reconnected).
func TestRelaySurvivesReconnects(t *testing.T) {
	rs := redistest.Start(t)
	evB := newEvents()
	a := node(t, rs.URL(), "a", newEvents())
	node(t, rs.URL(), "b", evB)
	admin := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("%s:%d", rs.Host, rs.Port), DisableIdentity: true})
	defer admin.Close()
	kills := 0
	kill := func() {
		list, err := admin.ClientList(context.Background()).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(list, "\n") {
			if !strings.Contains(line, " name=videochat-relay-b ") {
				continue
			}
			for _, f := range strings.Fields(line) {
				if id, ok := strings.CutPrefix(f, "id="); ok {
					if err := admin.Do(context.Background(), "CLIENT", "KILL", "ID", id).Err(); err == nil {
						kills++
					}
				}
			}
		}
	}
	const n = 1000
	for i := range n {
		if i%25 == 10 {
			kill()
		}
		for a.Send("b", []byte(strconv.Itoa(i))) != nil {
			time.Sleep(time.Millisecond) // queue full: wait for the sender
		}
		if i%10 == 0 {
			time.Sleep(time.Millisecond) // spread the messages over the kills
		}
	}
	evB.until(t, 10*time.Second, func() bool { return len(evB.delivered) == n }, fmt.Sprintf("%d messages", n))
	for i, m := range evB.delivered {
		if m != "a:"+strconv.Itoa(i) {
			t.Fatalf("message %d is %q", i, m)
		}
	}
	t.Logf("%d messages delivered in order across %d kills of the receiver's connection", n, kills)
	if kills < 5 { // of 40 tries: the reader may be reconnecting when one looks
		t.Fatalf("only %d kills", kills)
	}
}
