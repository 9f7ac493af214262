package main

import (
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"videochat/cluster"
	"videochat/internal/redistest"
	"videochat/internal/rtctest"
	"videochat/signaling"
)

// startNodes runs n Apps that share the Redis at url (nodes n1, n2, ...).
func startNodes(t *testing.T, url string, n int, mods ...func(*Config)) []*App {
	t.Helper()
	nodes := make([]*App, n)
	for i := range nodes {
		id := "n" + string(rune('1'+i))
		nodes[i] = startApp(t, func(c *Config) {
			c.RedisURL, c.NodeID = url, id
			for _, m := range mods {
				m(c)
			}
		})
	}
	return nodes
}

func wsOf(a *App) string { return wsURLOf(a.URL(), "/ws") }

// watcher is a logged-in client that keeps the latest users list.
type watcher struct {
	t     *testing.T
	name  string
	ws    *websocket.Conn
	mu    sync.Mutex
	users []string
	total int
	msgs  chan signaling.Message
	done  chan struct{}
}

// tryLogin logs in as name on url; it returns the connection, or nil and
// the refusal's message.
func tryLogin(t *testing.T, url, name string) (*websocket.Conn, string) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	_ = ws.WriteJSON(signaling.Message{Type: "login", Name: name})
	var reply signaling.Message
	if err := ws.ReadJSON(&reply); err != nil {
		t.Fatal(err)
	}
	if reply.Type != "login" || reply.Success == nil || !*reply.Success {
		_ = ws.Close()
		return nil, reply.Message
	}
	return ws, ""
}

func watch(t *testing.T, url, name string) *watcher {
	t.Helper()
	ws, msg := tryLogin(t, url, name)
	if ws == nil {
		t.Fatalf("login %s: %s", name, msg)
	}
	w := &watcher{t: t, name: name, ws: ws, msgs: make(chan signaling.Message, 64), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			var m signaling.Message
			if err := ws.ReadJSON(&m); err != nil {
				return
			}
			if m.Type == "users" {
				w.mu.Lock()
				w.users, w.total = m.Users, m.Total
				w.mu.Unlock()
				continue
			}
			select {
			case w.msgs <- m:
			default:
			}
		}
	}()
	t.Cleanup(func() { _ = ws.Close(); <-w.done })
	return w
}

// waitUsers waits until the list is exactly want (sorted).
func (w *watcher) waitUsers(d time.Duration, want ...string) time.Duration {
	w.t.Helper()
	slices.Sort(want)
	start := time.Now()
	for deadline := start.Add(d); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		w.mu.Lock()
		ok := slices.Equal(w.users, want) && w.total == len(want)
		w.mu.Unlock()
		if ok {
			return time.Since(start)
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.t.Fatalf("%s sees %v (total %d), want %v", w.name, w.users, w.total, want)
	return 0
}

func TestClusterNamesAndPresence(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, rs.URL(), 3)
	alice := watch(t, wsOf(nodes[0]), "alice")

	// Taken on node 1: refused on nodes 2 and 3, in every look-alike form.
	for i, name := range []string{"alice", "Alice", "аlice"} { // the last one's "а" is Cyrillic
		ws, msg := tryLogin(t, wsOf(nodes[1+i%2]), name)
		if ws != nil {
			_ = ws.Close()
			t.Fatalf("%q logged in on node %d while alice is online on node 1", name, 2+i%2)
		}
		if !strings.Contains(msg, "taken") {
			t.Fatalf("refusal of %q: %q", name, msg)
		}
	}

	bob := watch(t, wsOf(nodes[1]), "bob")
	carol := watch(t, wsOf(nodes[2]), "carol")
	var worst time.Duration
	for _, w := range []*watcher{alice, bob, carol} {
		worst = max(worst, w.waitUsers(5*time.Second, "alice", "bob", "carol"))
	}
	t.Logf("presence on every node within %v of the last login", worst)

	// A logout frees the name everywhere at once and leaves every list.
	_ = carol.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	<-carol.done
	for _, w := range []*watcher{alice, bob} {
		w.waitUsers(5*time.Second, "alice", "bob")
	}
	again := watch(t, wsOf(nodes[0]), "carol")
	again.waitUsers(5*time.Second, "alice", "bob", "carol")
}

// clusterCall has alice (on from) call bob (on to) and waits until media
// flows both ways with intact payloads.
func clusterCall(t *testing.T, from, to *App, caller, callee string) (a, b *wsPeer, stop func()) {
	t.Helper()
	return clusterCallWS(t, wsOf(from), wsOf(to), caller, callee)
}

// clusterCallWS is clusterCall between the nodes at these WebSocket URLs.
func clusterCallWS(t *testing.T, from, to string, caller, callee string) (a, b *wsPeer, stop func()) {
	t.Helper()
	a = dialPeer(t, from, caller, rtctest.Options{})
	b = dialPeer(t, to, callee, rtctest.Options{})
	start := time.Now()
	a.call(callee)
	if m := a.expect("answer"); m.Name != callee {
		t.Fatalf("answer names %q", m.Name)
	}
	if m := b.expect("offer"); m.Name != caller {
		t.Fatalf("offer names %q", m.Name)
	}
	a.expect("accepted")
	t.Logf("%s -> %s: accepted %v after the offer", caller, callee, time.Since(start))
	stopA, stopB := a.StartSending(), b.StartSending()
	for _, p := range []*wsPeer{a, b} {
		for _, k := range kinds {
			if err := p.WaitPackets(k, 100, 10*time.Second); err != nil {
				t.Fatalf("%s: %v", p.name, err)
			}
			if r := p.Received(k); r.Corrupt != 0 {
				t.Fatalf("%s %s: %d of %d payloads corrupt", p.name, k, r.Corrupt, r.Packets)
			}
		}
	}
	return a, b, func() { stopA(); stopB() }
}

func TestClusterCallAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, rs.URL(), 3)

	// alice (node 1) calls bob (node 2): the call is hosted on node 1,
	// where both PeerConnections are; node 2 only relays bob's signaling.
	alice, bob, stop := clusterCall(t, nodes[0], nodes[1], "alice", "bob")
	defer stop()
	if got := len(nodes[0].sfu.Stats()); got != 1 {
		t.Fatalf("node 1 hosts %d calls, want 1", got)
	}
	if got := len(nodes[1].sfu.Stats()); got != 0 {
		t.Fatalf("node 2 hosts %d calls, want 0 (media must not cross nodes)", got)
	}
	// A PLI from the remote participant reaches the caller.
	before := alice.KeyframeRequests()
	if err := bob.SendPLI(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 2*time.Second, func() bool { return alice.KeyframeRequests() > before }, "PLI did not reach the publisher")
	// The remote participant is busy for everyone, on any node.
	carol := dialPeer(t, wsOf(nodes[1]), "carol", rtctest.Options{})
	carol.call("bob")
	if m := carol.expect("error"); !strings.Contains(m.Message, "in another call") {
		t.Fatalf("calling busy bob: %+v", m)
	}
	// The remote participant hangs up: the caller is told, media stops.
	bob.send(signalingLeave("alice"))
	if m := alice.expect("leave"); m.Reason != "hangup" || m.Name != "bob" {
		t.Fatalf("leave %+v", m)
	}
	assertForwardingStops(t, alice)

	// dave (node 3) calls erin (node 1); dave's tab closes: erin is told.
	dave, erin, stop2 := clusterCall(t, nodes[2], nodes[0], "dave", "erin")
	defer stop2()
	_ = dave.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
	if m := erin.expect("leave"); m.Reason != "disconnected" || m.Name != "dave" {
		t.Fatalf("erin: leave %+v", m)
	}
	assertForwardingStops(t, erin)

	// The remote side's tab closes: the host's caller is told.
	frank, gina, stop3 := clusterCall(t, nodes[1], nodes[2], "frank", "gina")
	defer stop3()
	_ = gina.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
	if m := frank.expect("leave"); m.Reason != "disconnected" || m.Name != "gina" {
		t.Fatalf("frank: leave %+v", m)
	}
}

func TestClusterNodeStopsCleanly(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, rs.URL(), 2)
	_, bob, stop := clusterCall(t, nodes[0], nodes[1], "alice", "bob")
	defer stop()
	closeApp(t, nodes[0])
	if m := bob.expect("leave"); m.Reason != "server shutting down" || m.Name != "alice" {
		t.Fatalf("bob: leave %+v", m)
	}
}

func TestClusterNodeDeath(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, rs.URL(), 3)
	alice, bob, stop := clusterCall(t, nodes[0], nodes[1], "alice", "bob")
	defer stop()
	// Node 1 dies: no heartbeat, no goodbye, its names left in Redis.
	died := time.Now()
	nodes[0].dir.(*cluster.Redis).Crash()
	if m := bob.expect("leave"); m.Reason != "connection failed" || m.Name != "alice" {
		t.Fatalf("bob: leave %+v", m)
	}
	told := time.Since(died)
	t.Logf("the remote participant was told %v after its host died", told)
	if told > 10*time.Second {
		t.Fatalf("told after %v, want within 10 s", told)
	}
	// bob's name stays his, and he can call someone else at once.
	if ws, _ := tryLogin(t, wsOf(nodes[2]), "bob"); ws != nil {
		_ = ws.Close()
		t.Fatal("bob's name was free on node 3 while he is online on node 2")
	}
	bob.sdpOff.Store(true)
	carol := dialPeer(t, wsOf(nodes[2]), "carol", rtctest.Options{})
	fresh := rtctest.NewPeer(t, rtctest.Options{})
	offer, err := fresh.PC.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	bob.send(signaling.Message{Type: "offer", Name: "carol", Offer: &offer})
	if m := carol.expect("offer"); m.Name != "bob" {
		t.Fatalf("carol: offer names %q", m.Name)
	}
	if m := bob.expect("answer"); m.Name != "carol" {
		t.Fatalf("bob: answer names %q", m.Name)
	}
	// The dead node's user can sign in elsewhere within the lease.
	var ws *websocket.Conn
	waitUntil(t, 10*time.Second, func() bool {
		ws, _ = tryLogin(t, wsOf(nodes[2]), "alice")
		return ws != nil
	}, "alice could not sign in again on node 3")
	t.Logf("alice signed in again on node 3 %v after node 1 died", time.Since(died))
	_ = ws.Close()
	_ = alice
}

func TestClusterRedisRestart(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, rs.URL(), 3)
	alice := watch(t, wsOf(nodes[0]), "alice")
	bob := watch(t, wsOf(nodes[1]), "bob")
	carol := watch(t, wsOf(nodes[2]), "carol")
	for _, w := range []*watcher{alice, bob, carol} {
		w.waitUsers(5*time.Second, "alice", "bob", "carol")
	}
	// A same-node call goes on through the outage; a cross-node call ends.
	dave, erin, stop := clusterCall(t, nodes[0], nodes[0], "dave", "erin")
	defer stop()
	ivan, judy, stopX := clusterCall(t, nodes[1], nodes[2], "ivan", "judy")
	defer stopX()
	rs.Stop()
	for _, p := range []*wsPeer{ivan, judy} {
		if m := p.expect("leave"); m.Reason != "connection failed" {
			t.Fatalf("%s: leave %+v", p.name, m)
		}
	}
	// Cut off, each node shows its own users only; a login or a call to
	// another node gets a clear error.
	alice.waitUsers(10*time.Second, "alice", "dave", "erin")
	bob.waitUsers(10*time.Second, "bob", "ivan")
	_, msg := tryLogin(t, wsOf(nodes[1]), "frank")
	if !strings.Contains(msg, "cannot be reached") {
		t.Fatalf("login during the outage: %q", msg)
	}
	ivan.sdpOff.Store(true) // its PeerConnection is done; the offer only tests signaling
	ivan.send(signaling.Message{Type: "offer", Name: "carol", Offer: &webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: "v=0\r\n"}})
	if m := ivan.expect("error"); !strings.Contains(m.Message, "cannot be reached") {
		t.Fatalf("cross-node call during the outage: %+v", m)
	} else {
		t.Logf("cross-node call during the outage: %q", m.Message)
	}
	n := erin.Received(webrtc.RTPCodecTypeVideo).Packets
	waitUntil(t, 5*time.Second, func() bool { return erin.Received(webrtc.RTPCodecTypeVideo).Packets > n+50 },
		"the same-node call stopped during the outage")

	rs.Restart()
	restarted := time.Now()
	for _, w := range []*watcher{alice, bob, carol} {
		w.waitUsers(10*time.Second, "alice", "bob", "carol", "dave", "erin", "ivan", "judy")
	}
	t.Logf("presence converged %v after Redis came back", time.Since(restarted))
	// Sign-ins wait two heartbeats after the restart (every node claims
	// its names again meanwhile); then names are unique again and
	// cross-node calls work.
	waitUntil(t, 10*time.Second, func() bool {
		ws, msg := tryLogin(t, wsOf(nodes[2]), "alice")
		if ws != nil {
			_ = ws.Close()
			t.Fatal("alice's name was free after the restart")
		}
		return strings.Contains(msg, "taken")
	}, "sign-in still refused after the restart")
	t.Logf("sign-in possible again %v after Redis came back", time.Since(restarted))
	_, _, stop2 := clusterCall(t, nodes[1], nodes[2], "gina", "hank")
	defer stop2()
	_ = dave
}

// callWithFreshPeer has p (whose PeerConnection is spent) call callee with
// a new PeerConnection over p's signaling connection, driving the
// protocol itself, and returns the new peer once the server's answer is
// applied.
func callWithFreshPeer(t *testing.T, p *wsPeer, callee string) *rtctest.Peer {
	t.Helper()
	p.sdpOff.Store(true)
	fresh := rtctest.NewPeer(t, rtctest.Options{})
	fresh.PC.OnICECandidate(func(c *webrtc.ICECandidate) {
		if c != nil {
			init := c.ToJSON()
			p.send(signaling.Message{Type: "candidate", Candidate: &init})
		}
	})
	offer, err := fresh.PC.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.PC.SetLocalDescription(offer); err != nil {
		t.Fatal(err)
	}
	p.send(signaling.Message{Type: "offer", Name: callee, Offer: &offer})
	answered := make(chan struct{})
	go func() { // the server's answer, then its candidates, until the socket closes
		var pending []webrtc.ICECandidateInit
		for m := range p.msgs {
			switch {
			case m.Type == "answer" && m.Answer != nil && fresh.PC.RemoteDescription() == nil:
				if err := fresh.PC.SetRemoteDescription(*m.Answer); err != nil {
					t.Errorf("%s: answer: %v", p.name, err)
					return
				}
				for _, c := range pending {
					_ = fresh.PC.AddICECandidate(c)
				}
				close(answered)
			case m.Type == "candidate" && m.Candidate != nil:
				if fresh.PC.RemoteDescription() == nil {
					pending = append(pending, *m.Candidate)
				} else {
					_ = fresh.PC.AddICECandidate(*m.Candidate) // fails only once fresh is closed
				}
			}
		}
	}()
	select {
	case <-answered:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no answer to the call to %s within 10 s", p.name, callee)
	}
	return fresh
}
