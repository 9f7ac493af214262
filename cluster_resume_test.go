package main

import (
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"videochat/cluster"
	"videochat/internal/redistest"
	"videochat/internal/rtctest"
)

// TestClusterResumeOnAnotherNode: a WebSocket lost mid-call reconnects
// through the balancer to another node and resumes there. The session
// stays on its node, the call on its host; media never stops; signaling
// goes on through the relay both ways.
func TestClusterResumeOnAnotherNode(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, rs.URL(), 3)
	alice, bob, stop := clusterCall(t, nodes[0], nodes[1], "alice", "bob") // hosted on node 1
	defer stop()
	flowing := func(what string) {
		t.Helper()
		for _, p := range []*wsPeer{alice, bob} {
			n := p.Received(webrtc.RTPCodecTypeVideo).Packets
			if err := p.WaitPackets(webrtc.RTPCodecTypeVideo, n+50, 10*time.Second); err != nil {
				t.Fatalf("%s: video to %s: %v", what, p.name, err)
			}
		}
	}
	resume := func(p *wsPeer, other *wsPeer, url, where string) {
		t.Helper()
		token := p.session
		p.dropSignaling()
		if m := other.expect("callstate"); m.Name != p.name || m.State != "reconnecting" {
			t.Fatalf("%s: %+v", other.name, m)
		}
		start := time.Now()
		m := p.resumeOn(url, token)
		if m.Success == nil || !*m.Success || m.Name != p.name || m.Call != other.name || m.Session == "" || m.Session == token {
			t.Fatalf("%s: resume reply %+v", p.name, m)
		}
		replied := time.Since(start)
		if len(m.ICEServers) != len(p.ice) {
			t.Fatalf("%s: resume reply iceServers %+v, login gave %+v", p.name, m.ICEServers, p.ice)
		}
		if m := other.expect("callstate"); m.Name != p.name || m.State != "connected" {
			t.Fatalf("%s: %+v", other.name, m)
		}
		t.Logf("%s resumed %s: reply after %v, the other side saw connected after %v", p.name, where,
			replied.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		flowing(p.name + "'s resume " + where)
		// The old token is spent, on every node.
		for i, n := range nodes {
			if r := p.resumeOn(wsOf(n), token); r.Success == nil || *r.Success {
				t.Fatalf("the spent token resumed on node %d: %+v", i+1, r)
			}
		}
	}

	// bob: session on node 2, call on node 1, new WebSocket on node 3.
	resume(bob, alice, wsOf(nodes[2]), "on node 3 (session on node 2, call on node 1)")
	// alice: session and call on node 1, new WebSocket on node 2.
	resume(alice, bob, wsOf(nodes[1]), "on node 2 (session and call on node 1)")
	if got := len(nodes[0].sfu.Stats()); got != 1 {
		t.Fatalf("node 1 hosts %d calls, want 1 (a resume moves no call)", got)
	}

	// bob hangs up over node 3 -> 2 -> 1; alice hears it over node 1 -> 2.
	bob.send(signalingLeave("alice"))
	if m := alice.expect("leave"); m.Reason != "hangup" || m.Name != "bob" {
		t.Fatalf("alice: leave %+v", m)
	}
	// alice (WebSocket on node 2, session on node 1) calls carol on node 3:
	// the call is hosted on alice's session's node, media flows.
	carol := dialPeer(t, wsOf(nodes[2]), "carol", rtctest.Options{})
	fresh := callWithFreshPeer(t, alice, "carol")
	if m := carol.expect("offer"); m.Name != "alice" {
		t.Fatalf("carol: offer names %q", m.Name)
	}
	defer fresh.StartSending()()
	defer carol.StartSending()()
	for _, p := range []*rtctest.Peer{fresh, carol.Peer} {
		if err := p.WaitPackets(webrtc.RTPCodecTypeVideo, 50, 10*time.Second); err != nil {
			t.Fatalf("a call from a resumed connection: %v", err)
		}
	}
	if got := len(nodes[0].sfu.Stats()); got != 1 {
		t.Fatalf("node 1 hosts %d calls, want 1", got)
	}
	// The cluster metrics say so: node 1 hosts a cross-node call and
	// alice's session, whose connection is on node 2; carol (node 3) is
	// in a call hosted elsewhere.
	for _, c := range []struct {
		node        int
		name, label string
		lv          string
		want        float64
	}{
		{0, "videochat_cluster_calls", "role", "hosted", 1},
		{2, "videochat_cluster_calls", "role", "remote", 1},
		{1, "videochat_cluster_resumed_sessions", "where", "here", 1},
		{0, "videochat_cluster_resumed_sessions", "where", "elsewhere", 1},
		{0, "videochat_cluster_nodes", "", "", 3},
		{1, "videochat_cluster_redis_up", "", "", 1},
	} {
		mfs := scrape(t, nodes[c.node].MetricsURL())
		var got float64
		if c.label == "" {
			got = metricValue(mfs, c.name)
		} else {
			got = metricValue(mfs, c.name, c.label, c.lv)
		}
		if got != c.want {
			t.Errorf("node %d: %s{%s=%q} = %v, want %v", c.node+1, c.name, c.label, c.lv, got, c.want)
		}
	}
	mfs := scrape(t, nodes[1].MetricsURL())
	out, in := metricValue(mfs, "videochat_cluster_relayed_messages_total", "direction", "out"),
		metricValue(mfs, "videochat_cluster_relayed_messages_total", "direction", "in")
	cmds, secs := metricValue(mfs, "videochat_cluster_redis_commands_total"), metricValue(mfs, "videochat_cluster_redis_seconds_total")
	if errs := metricValue(mfs, "videochat_cluster_redis_errors_total"); out <= 0 || in <= 0 || cmds <= 0 || errs != 0 {
		t.Errorf("node 2 relayed %v out, %v in, %v Redis round trips, %v failed", out, in, cmds, errs)
	}
	t.Logf("node 2: %v messages relayed out, %v in; %v Redis round trips (blocking reads untimed), %.1f ms in all",
		out, in, cmds, 1000*secs)

	// bob closes his tab on node 3: his session on node 2 ends, his name
	// is free everywhere.
	_ = bob.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
	waitUntil(t, 5*time.Second, func() bool {
		ws, _ := tryLogin(t, wsOf(nodes[0]), "bob")
		if ws != nil {
			_ = ws.Close()
		}
		return ws != nil
	}, "bob's name still taken after he closed his resumed connection")
}

// TestClusterResumeNodeLoss: the node holding a resumed connection dies
// (its session lives on another node): the session waits for a resume,
// which works on a third node, call and all. A token of a dead node is
// refused at once.
func TestClusterResumeNodeLoss(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, rs.URL(), 3)
	alice, bob, stop := clusterCall(t, nodes[0], nodes[1], "alice", "bob") // hosted on node 1, bob's session on node 2
	defer stop()
	carol := dialPeer(t, wsOf(nodes[2]), "carol", rtctest.Options{}) // a session on node 3

	token := bob.session
	bob.dropSignaling()
	if m := alice.expect("callstate"); m.State != "reconnecting" {
		t.Fatalf("alice: %+v", m)
	}
	if m := bob.resumeOn(wsOf(nodes[2]), token); m.Success == nil || !*m.Success {
		t.Fatalf("bob: resume on node 3: %+v", m)
	}
	if m := alice.expect("callstate"); m.State != "connected" {
		t.Fatalf("alice: %+v", m)
	}
	// Node 3, where bob's connection is, dies: node 2 holds bob's session
	// for a resume, and alice hears he is reconnecting.
	died := time.Now()
	nodes[2].dir.(*cluster.Redis).Crash()
	if m := alice.expect("callstate"); m.Name != "bob" || m.State != "reconnecting" {
		t.Fatalf("alice: %+v", m)
	}
	t.Logf("alice heard bob reconnecting %v after the node holding his connection died", time.Since(died).Round(time.Millisecond))
	token = bob.session
	bob.dropSignaling()
	if m := bob.resumeOn(wsOf(nodes[0]), token); m.Success == nil || !*m.Success || m.Call != "alice" {
		t.Fatalf("bob: resume on node 1: %+v", m)
	}
	if m := alice.expect("callstate"); m.State != "connected" {
		t.Fatalf("alice: %+v", m)
	}
	n := alice.Received(webrtc.RTPCodecTypeVideo).Packets
	if err := alice.WaitPackets(webrtc.RTPCodecTypeVideo, n+50, 10*time.Second); err != nil {
		t.Fatalf("media after bob's second resume: %v", err)
	}
	// carol's session died with node 3: her token is refused at once.
	start := time.Now()
	if m := carol.resumeOn(wsOf(nodes[1]), carol.session); m.Success == nil || *m.Success {
		t.Fatalf("carol: resume of a dead node's session: %+v", m)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the refusal took %v (it waited for the dead node?)", d)
	}
}
