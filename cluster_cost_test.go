package main

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"videochat/internal/redistest"
	"videochat/internal/rtctest"
)

// placeCall has a call b, b accept (the test client answers at once), and
// returns the time from the offer until media arrived both ways.
func placeCall(t *testing.T, a, b *wsPeer) time.Duration {
	t.Helper()
	start := time.Now()
	a.call(b.name)
	a.expect("answer")
	b.expect("offer")
	a.expect("accepted")
	for _, p := range []*wsPeer{a, b} {
		if err := p.WaitPackets(kinds[1], 5, 10*time.Second); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
	}
	return time.Since(start)
}

func sumCommands(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// TestClusterCallSetupCost measures call setup (offer -> video both ways)
// between two users of one node and of two nodes, and the Redis commands a
// cross-node setup costs beyond the nodes' heartbeats.
func TestClusterCallSetupCost(t *testing.T) {
	rs := redistest.Start(t)
	// Slow heartbeats (one per node per 20 s) so that what a call setup
	// costs stands out from the background.
	nodes := make([]*App, 3)
	for i := range nodes {
		id := fmt.Sprintf("n%d", i+1)
		nodes[i] = startApp(t, func(c *Config) {
			c.RedisURL, c.NodeID, c.clusterBeat, c.clusterTTL = rs.URL(), id, 20*time.Second, 60*time.Second
		})
	}
	const rounds = 5
	var local, cross []time.Duration
	var perCall []int64
	for i := range rounds {
		a := dialPeer(t, wsOf(nodes[0]), fmt.Sprintf("la%d", i), rtctest.Options{})
		b := dialPeer(t, wsOf(nodes[0]), fmt.Sprintf("lb%d", i), rtctest.Options{})
		stop := startBoth(a, b)
		local = append(local, placeCall(t, a, b))
		stop()

		a = dialPeer(t, wsOf(nodes[i%3]), fmt.Sprintf("xa%d", i), rtctest.Options{})
		b = dialPeer(t, wsOf(nodes[(i+1)%3]), fmt.Sprintf("xb%d", i), rtctest.Options{})
		stop = startBoth(a, b)
		time.Sleep(500 * time.Millisecond) // presence of the logins just made
		c0 := rs.Commands()
		d := placeCall(t, a, b)
		c1 := rs.Commands()
		n := sumCommands(c1) - sumCommands(c0) - 1 // the INFO itself
		perCall = append(perCall, n)
		cross = append(cross, d)
		t.Logf("cross-node call %d: %v, %d Redis commands (%d xadd, %d xread, %d evalsha)", i, d, n,
			c1["xadd"]-c0["xadd"], c1["xread"]-c0["xread"], c1["evalsha"]-c0["evalsha"])
		stop()
	}
	slices.Sort(local)
	slices.Sort(cross)
	slices.Sort(perCall)
	t.Logf("call setup, offer -> video both ways (%d calls each): same node median %v max %v; across nodes median %v max %v",
		rounds, local[rounds/2], local[rounds-1], cross[rounds/2], cross[rounds-1])
	t.Logf("Redis commands per cross-node call setup: median %d, max %d", perCall[rounds/2], perCall[rounds-1])
}

func startBoth(a, b *wsPeer) func() {
	s1, s2 := a.StartSending(), b.StartSending()
	return func() { s1(); s2() }
}

// TestClusterTURNPeers: a node's TURN relay may reach the media endpoint
// of every other live node (a user's call may be hosted there), and
// nothing else; the registry carries the addresses.
func TestClusterTURNPeers(t *testing.T) {
	rs := redistest.Start(t)
	nodes := make([]*App, 2)
	for i := range nodes {
		id := fmt.Sprintf("n%d", i+1)
		ip := fmt.Sprintf("203.0.113.%d", i+1) // the advertised public address
		nodes[i] = startApp(t, func(c *Config) { c.RedisURL, c.NodeID, c.PublicIP = rs.URL(), id, ip })
	}
	waitUntil(t, 5*time.Second, func() bool { return len(nodes[0].dir.Peers()) == 1 }, "node 2 not in node 1's registry")
	other := netip.MustParseAddrPort(nodes[1].mediaAddr())
	for _, c := range []struct {
		ap   netip.AddrPort
		want bool
	}{
		{other, true},
		{netip.AddrPortFrom(other.Addr(), 0), true}, // a permission for the IP
		{netip.AddrPortFrom(other.Addr(), other.Port()+1), false},
		{netip.MustParseAddrPort("198.51.100.7:9090"), false},
	} {
		if got := nodes[0].clusterPeer(c.ap); got != c.want {
			t.Errorf("node 1 relays to %v: %v, want %v", c.ap, got, c.want)
		}
	}
	closeApp(t, nodes[1])
	waitUntil(t, 5*time.Second, func() bool { return !nodes[0].clusterPeer(other) }, "a stopped node's endpoint still admitted")
}
