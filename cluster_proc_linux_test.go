package main

import (
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	pturn "github.com/pion/turn/v4"
	"github.com/pion/webrtc/v4"

	"videochat/internal/netns"
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

var (
	procMediaRe   = regexp.MustCompile(`msg="cluster: joining" node=\S+ media=(\S+)`)
	procMetricsRe = regexp.MustCompile(`msg="Prometheus metrics" url=(\S+)`)
)

// publicNamespace returns a network namespace whose only address (beside
// loopback) is a global unicast one, reached from the host through the
// veth (a host route that goes with the veth), and another global address
// that exists nowhere. The turn package never relays to documentation or
// private ranges by AllowPeer, so a cluster's media addresses must look
// public; these exist only on this host, so no packet leaves it.
func publicNamespace(t *testing.T) (ns *netns.NS, public, stranger string) {
	t.Helper()
	ns = netns.New(t)
	id := strings.Split(ns.HostIP, ".")[2] // 10.251.<id>.1: ours while the veth lives
	public, stranger = "11.22."+id+".44", "11.22."+id+".45"
	ns.Exec("ip", "addr", "del", ns.NSIP+"/24", "dev", ns.NSIf)
	ns.Exec("ip", "addr", "add", public+"/32", "dev", ns.NSIf)
	ns.Exec("ip", "route", "add", ns.HostIP+"/32", "dev", ns.NSIf)
	ns.Exec("ip", "route", "replace", "default", "via", ns.HostIP, "dev", ns.NSIf)
	if out, err := exec.Command("ip", "route", "add", public+"/32", "dev", ns.HostIf).CombinedOutput(); err != nil {
		t.Fatalf("ip route add %s: %v\n%s", public, err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "route", "del", public+"/32", "dev", ns.HostIf).Run() })
	return ns, public, stranger
}

// logged returns the first submatch of re in p's log, failing without one.
func (p *serverProc) logged(re *regexp.Regexp) string {
	p.t.Helper()
	m := re.FindStringSubmatch(p.logTail())
	if m == nil {
		p.t.Fatalf("no %v in the log:\n%s", re, p.logTail())
	}
	return m[1]
}

// TestClusterProcTURNAcrossNodes: two nodes as processes in a network
// namespace whose interface also carries a public address,
// their -public-ip (the TURN package relays to public addresses of other
// nodes only). bob signs in on node 2 and is called by alice on node 1,
// both relay-only: bob's relay on node 2's TURN reaches node 1's media
// endpoint, and video flows both ways through it. Relays to an address
// that is no node's media endpoint are refused.
func TestClusterProcTURNAcrossNodes(t *testing.T) {
	ns, public, stranger := publicNamespace(t)
	rs := redistest.StartOn(t, ns.HostIP) // the nodes reach it over the veth
	bin := ns.Wrapper(buildServer(t))
	procs := make([]*serverProc, 2)
	for i := range procs {
		procs[i] = runServerProc(t, bin, "-redis-url", rs.URL(), "-node-id", fmt.Sprintf("t%d", i+1),
			// A fixed media port: with port 0 every address of the node
			// would get another one, and -public-ip names one port.
			"-udp-port", strconv.Itoa(40001+i),
			"-addr", public+":0", "-turn-addr", public+":0", "-public-ip", public,
			"-turn-secret", "cluster2-test-secret", "-metrics-addr", public+":0",
			// pion's relay-only policy still pairs its active ICE-TCP host
			// candidates with the node's passive ones: no ICE-TCP here.
			"-ice-tcp=false")
	}
	media1 := procs[0].logged(procMediaRe)

	alice := dialPeer(t, procs[0].wsURL(), "alice", rtctest.Options{RelayOnly: true})
	bob := dialPeer(t, procs[1].wsURL(), "bob", rtctest.Options{RelayOnly: true})
	if len(bob.ice) < 2 || !strings.Contains(strings.Join(bob.ice[1].URLs, " "), "turn:"+procs[1].turnUDP) {
		t.Fatalf("bob's ICE servers %+v, want node 2's TURN %s", bob.ice, procs[1].turnUDP)
	}
	start := time.Now()
	alice.call("bob")
	alice.expect("answer")
	bob.expect("offer")
	alice.expect("accepted")
	defer alice.StartSending()()
	defer bob.StartSending()()
	for _, p := range []*wsPeer{alice, bob} {
		if err := p.WaitPackets(webrtc.RTPCodecTypeVideo, 1, 15*time.Second); err == nil {
			// pion's ICE accepts a relay pair only after 2 s (RelayAcceptanceMinWait)
			t.Logf("%s: first video %v after the offer", p.name, time.Since(start).Round(time.Millisecond))
		}
		if err := p.WaitPackets(webrtc.RTPCodecTypeVideo, 50, 15*time.Second); err != nil {
			pair, _ := p.PC.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
			t.Fatalf("%s over TURN: %v (ICE servers %+v, pair %v)\nnode 1:\n%s\nnode 2:\n%s", p.name, err, p.ice, pair,
				procs[0].logTail(), procs[1].logTail())
		}
	}
	t.Logf("video both ways through the relays %v after the offer", time.Since(start).Round(time.Millisecond))
	pair, err := bob.PC.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Local.Typ != webrtc.ICECandidateTypeRelay {
		t.Fatalf("bob: selected pair %v (%v), want a relay", pair, err)
	}
	if got := net.JoinHostPort(pair.Remote.Address, strconv.Itoa(int(pair.Remote.Port))); got != media1 {
		t.Fatalf("bob's relay (node 2) reaches %s, want node 1's media endpoint %s", got, media1)
	}
	t.Logf("bob's relay %s:%d on node 2 reaches node 1's media endpoint %s", pair.Local.Address, pair.Local.Port, media1)

	// Node 2's TURN with bob's credentials: a permission for a public
	// address that is no node's is refused; packets to node 1's address
	// but another port are dropped (and counted).
	conn, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var user, pass string
	for _, s := range bob.ice {
		if s.Username != "" {
			user, pass = s.Username, s.Credential
		}
	}
	c, err := pturn.NewClient(&pturn.ClientConfig{STUNServerAddr: procs[1].turnUDP, TURNServerAddr: procs[1].turnUDP,
		Username: user, Password: pass, Conn: conn})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	if err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(stranger), Port: 9}); err == nil {
		t.Fatalf("node 2's TURN granted a permission for %s, no node's media address", stranger)
	}
	if err := c.CreatePermission(&net.UDPAddr{IP: net.ParseIP(ns.HostIP), Port: 9}); err == nil {
		t.Fatalf("node 2's TURN granted a permission for the private %s", ns.HostIP)
	}
	metrics := procs[1].logged(procMetricsRe)
	denied := func() float64 { return metricValue(scrape(t, metrics), "videochat_turn_denied_packets_total") }
	before := denied()
	m1 := netip.MustParseAddrPort(media1)
	wrong := &net.UDPAddr{IP: net.ParseIP(public), Port: int(m1.Port()) + 10} // the nodes have 40001 and 40002
	waitUntil(t, 5*time.Second, func() bool {
		if _, err := relay.WriteTo([]byte("not for you"), wrong); err != nil {
			t.Fatalf("relay to %v: %v", wrong, err)
		}
		return denied() >= before+3
	}, "node 2's TURN did not drop packets to a port that is no node's media endpoint")
	t.Logf("node 2's TURN: permissions for %s and %s refused; packets to %v dropped (denied %v -> %v)",
		stranger, ns.HostIP, wrong, before, denied())
}
