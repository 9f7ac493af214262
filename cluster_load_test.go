package main

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"videochat/internal/redistest"
	"videochat/internal/rtctest"
)

// TestClusterLoad: 200 users spread over three nodes, and calls between
// users of different nodes set up all at once (pion clients that answer at
// once); every call must connect with video both ways. Then as many calls
// at once on a single node, for comparison. CLUSTER_LOAD_CALLS sets the
// number of calls: clusterLoadCalls by default, 50 for the full
// run.
//
// Every call's media waits until all calls of the batch are connected
// (ICE and DTLS): under -race, with clients and nodes in one process on 2
// cores, the first calls' media saturate the CPU, the kernel drops most
// datagrams at the nodes' media sockets, and the later calls' DTLS flights
// go with them (pion's DTLS retransmission backs off, so a 10 s handshake
// gets about 7 tries; see cmd/loadtest/gate.go for the measurements).
func TestClusterLoad(t *testing.T) {
	const users = 200
	calls := clusterLoadCalls
	if v := os.Getenv("CLUSTER_LOAD_CALLS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || 2*n > users {
			t.Fatalf("CLUSTER_LOAD_CALLS=%q", v)
		}
		calls = n
	}
	rs := redistest.Start(t)
	// Every client comes from 127.0.0.1: lift the per-address limits.
	lift := func(c *Config) { c.Limits.MaxConnsPerIP, c.Limits.CallAttemptsPerIP = 10000, 10000 }
	nodes := startNodes(t, rs.URL(), 3, lift)

	// Idle users, spread over the nodes, beside those in calls.
	idle := make([]*watcher, 0, users-2*calls)
	for i := range users - 2*calls {
		idle = append(idle, watch(t, wsOf(nodes[i%3]), fmt.Sprintf("idle%03d", i)))
	}
	pairs := make([][2]*wsPeer, calls)
	for i := range pairs {
		pairs[i] = [2]*wsPeer{
			dialPeer(t, wsOf(nodes[i%3]), fmt.Sprintf("a%03d", i), rtctest.Options{}),
			dialPeer(t, wsOf(nodes[(i+1)%3]), fmt.Sprintf("b%03d", i), rtctest.Options{}),
		}
	}
	// Presence: every node counts everyone.
	for _, w := range idle[:3] {
		waitUntil(t, 10*time.Second, func() bool {
			w.mu.Lock()
			defer w.mu.Unlock()
			return w.total == users
		}, fmt.Sprintf("%s does not count %d users", w.name, users))
	}
	c0 := rs.Commands()
	cross := parallelCalls(t, pairs)
	c1 := rs.Commands()
	report(t, "across 3 nodes", cross)
	t.Logf("Redis: %d commands during the %d setups (%d publish), %.1f per call, heartbeats included",
		sumCommands(c1)-sumCommands(c0), calls, c1["publish"]-c0["publish"],
		float64(sumCommands(c1)-sumCommands(c0))/float64(calls))
	for k, v := range c1 {
		if d := v - c0[k]; d > 0 {
			t.Logf("  %s: %d", k, d)
		}
	}
	for _, p := range pairs {
		p[0].send(signalingLeave(p[1].name))
		p[0].Close()
		p[1].Close()
	}

	single := startApp(t, lift)
	local := make([][2]*wsPeer, calls)
	for i := range local {
		local[i] = [2]*wsPeer{
			dialPeer(t, wsOf(single), fmt.Sprintf("sa%03d", i), rtctest.Options{}),
			dialPeer(t, wsOf(single), fmt.Sprintf("sb%03d", i), rtctest.Options{}),
		}
	}
	report(t, "on one node", parallelCalls(t, local))
}

// clusterLoadCalls is TestClusterLoad's size in CI (see the README's
// "Parallel set-ups" for the measurements behind it).
const clusterLoadCalls = 50

// parallelCalls starts every call at once and returns each one's time from
// offer to video both ways; any failure fails the test. Media starts once
// every call is connected (or has failed).
func parallelCalls(t *testing.T, pairs [][2]*wsPeer) []time.Duration {
	t.Helper()
	times := make([]time.Duration, len(pairs))
	errs := make([]error, len(pairs))
	var connected sync.WaitGroup
	connected.Add(len(pairs))
	allConnected := make(chan struct{})
	go func() { connected.Wait(); close(allConnected) }() // ends: every call arrives once
	var wg sync.WaitGroup
	for i, p := range pairs {
		wg.Go(func() {
			arrive := sync.OnceFunc(connected.Done)
			defer arrive()
			times[i], errs[i] = setUpCall(p[0], p[1], arrive, allConnected)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return times
}

// setUpCall is placeCall for another goroutine than the test's: it calls,
// waits until both PeerConnections are connected, arrives, waits for
// start, then sends media both ways until video arrives at both ends.
func setUpCall(a, b *wsPeer, arrive func(), start <-chan struct{}) (time.Duration, error) {
	t0 := time.Now()
	a.call(b.name)
	for _, step := range []struct {
		p   *wsPeer
		typ string
	}{{a, "answer"}, {b, "offer"}, {a, "accepted"}} {
		if err := await(step.p, step.typ); err != nil {
			return 0, err
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range []*wsPeer{a, b} {
		for p.PC.ConnectionState() != webrtc.PeerConnectionStateConnected {
			if time.Now().After(deadline) {
				return 0, fmt.Errorf("%s: not connected within 30 s (connection %s, ICE %s)", p.name, p.PC.ConnectionState(), p.PC.ICEConnectionState())
			}
			time.Sleep(10 * time.Millisecond) // polls a state pion reports asynchronously
		}
	}
	arrive()
	select {
	case <-start:
	case <-time.After(30 * time.Second):
		return 0, fmt.Errorf("%s/%s: the other calls did not connect within 30 s", a.name, b.name)
	}
	stop := startBoth(a, b)
	defer stop()
	for _, p := range []*wsPeer{a, b} {
		if err := p.WaitPackets(kinds[1], 5, 30*time.Second); err != nil {
			return 0, fmt.Errorf("%s (connection %s, ICE %s): %w", p.name, p.PC.ConnectionState(), p.PC.ICEConnectionState(), err)
		}
	}
	return time.Since(t0), nil
}

func await(p *wsPeer, typ string) error {
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-p.msgs:
			if !ok {
				return fmt.Errorf("%s: closed waiting for %s", p.name, typ)
			}
			if m.Type == typ {
				return nil
			}
			if m.Type == "error" || m.Type == "leave" {
				return fmt.Errorf("%s: %+v waiting for %s", p.name, m, typ)
			}
		case <-timeout:
			return fmt.Errorf("%s: no %s within 30 s", p.name, typ)
		}
	}
}

func report(t *testing.T, what string, d []time.Duration) {
	t.Helper()
	slices.Sort(d)
	t.Logf("%d calls set up at once %s: offer -> video both ways p50 %v, p99 %v, max %v",
		len(d), what, d[len(d)/2].Round(time.Millisecond), d[(len(d)*99)/100].Round(time.Millisecond), d[len(d)-1].Round(time.Millisecond))
}
