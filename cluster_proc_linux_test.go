package main

import (
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"videochat/internal/redistest"
	"videochat/internal/rtctest"
)

// startNodeProcs runs n server processes (one binary, built once) that
// share the Redis at url, as nodes p1, p2, ...
func startNodeProcs(t *testing.T, url string, n int, args ...string) []*serverProc {
	t.Helper()
	bin := buildServer(t)
	procs := make([]*serverProc, n)
	for i := range procs {
		a := append([]string{"-redis-url", url, "-node-id", "p" + string(rune('1'+i))}, args...)
		procs[i] = runServerProc(t, bin, a...)
	}
	return procs
}

// TestClusterProcNodeKill: the node hosting a cross-node call is killed
// with SIGKILL (a real process: its sockets vanish, its names and
// registry entry stay in Redis). The remote participant is told within
// 10 s, keeps its name, calls someone else at once with media flowing,
// and the dead node's user signs in again on another node within the
// lease.
func TestClusterProcNodeKill(t *testing.T) {
	rs := redistest.Start(t)
	procs := startNodeProcs(t, rs.URL(), 3)
	_, bob, stop := clusterCallWS(t, procs[0].wsURL(), procs[1].wsURL(), "alice", "bob")
	defer stop()

	died := time.Now()
	procs[0].kill()
	if m := bob.expect("leave"); m.Reason != "connection failed" || m.Name != "alice" {
		t.Fatalf("bob: leave %+v", m)
	}
	told := time.Since(died)
	t.Logf("the remote participant was told %v after its host was killed", told.Round(time.Millisecond))
	if told > 10*time.Second { // expect reports after 10 s anyway
		t.Fatalf("told after %v, want within 10 s", told)
	}
	// bob's name stays his on every node.
	for _, p := range procs[1:] {
		if ws, _ := tryLogin(t, p.wsURL(), "bob"); ws != nil {
			_ = ws.Close()
			t.Fatal("bob's name was free while he is online on node 2")
		}
	}
	// bob calls carol (node 3) at once, with a fresh PeerConnection over
	// the same signaling connection: media flows both ways.
	carol := dialPeer(t, procs[2].wsURL(), "carol", rtctest.Options{})
	again := time.Now()
	fresh := callWithFreshPeer(t, bob, "carol")
	if m := carol.expect("offer"); m.Name != "bob" {
		t.Fatalf("carol: offer names %q", m.Name)
	}
	defer fresh.StartSending()()
	defer carol.StartSending()()
	for _, p := range []*rtctest.Peer{fresh, carol.Peer} {
		if err := p.WaitPackets(webrtc.RTPCodecTypeVideo, 50, 10*time.Second); err != nil {
			t.Fatalf("the call after the node's death: %v", err)
		}
	}
	t.Logf("bob's next call had video both ways %v after his offer", time.Since(again).Round(time.Millisecond))

	// alice's node is gone: she signs in again on node 2 once her name's
	// lease (5 s of missing heartbeats) has run out.
	var signedIn time.Duration
	waitUntil(t, 10*time.Second, func() bool {
		ws, msg := tryLogin(t, procs[1].wsURL(), "alice")
		if ws == nil {
			if !strings.Contains(msg, "taken") {
				t.Fatalf("alice's sign-in refused: %q", msg)
			}
			return false
		}
		signedIn = time.Since(died)
		_ = ws.Close()
		return true
	}, "alice could not sign in again within 10 s of her node's death")
	t.Logf("alice signed in again on node 2 %v after node 1 was killed", signedIn.Round(time.Millisecond))
}
