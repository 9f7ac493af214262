// Package netns builds throwaway Linux network namespaces for tests: a
// namespace joined to the host by a veth pair, optionally with an nftables
// firewall, so a real program (Chromium) can run behind a hostile network.
// It needs root, iproute2 and nftables.
package netns

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
)

// Hint says what the namespace tests need.
const Hint = "network-namespace tests need root with `ip` (iproute2) and `nft` (nftables): run `make test` as root"

var counter atomic.Int32 // unique names within this process

// NS is a namespace with a veth link to the host.
type NS struct {
	Name   string
	HostIf string // the host's end of the veth
	NSIf   string // the namespace's end of the veth
	HostIP string // the host's end of the veth
	NSIP   string // the namespace's end
	t      testing.TB
}

// New creates a namespace; it is deleted when the test ends.
func New(t testing.TB) *NS {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("not root: " + Hint)
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: %s", tool, Hint)
		}
	}
	n := int(counter.Add(1))
	if n == 1 {
		sweepDead()
	}
	ns := &NS{Name: fmt.Sprintf("vc%d-%d", os.Getpid(), n), t: t}
	// A namespace of this name is a leftover of a dead process whose pid
	// we now have.
	_ = exec.Command("ip", "netns", "del", ns.Name).Run()
	ns.must("ip", "netns", "add", ns.Name)
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns.Name).Run() })
	// Claim a free id: its veth names and 10.251.<id>.0/24 are ours once
	// the veth is created (tests of other processes, or leftovers, may hold
	// the first choice).
	var id int
	var host, peer string
	for try := 0; ; try++ {
		id = (os.Getpid()*7 + n + try) % 250
		host, peer = fmt.Sprintf("vch%d", id), fmt.Sprintf("vcn%d", id)
		out, err := exec.Command("ip", "link", "add", host, "type", "veth", "peer", "name", peer).CombinedOutput()
		if err == nil {
			break
		}
		if !strings.Contains(string(out), "File exists") || try == 249 {
			t.Fatalf("ip link add %s: %v\n%s", host, err, out)
		}
	}
	ns.HostIP, ns.NSIP = fmt.Sprintf("10.251.%d.1", id), fmt.Sprintf("10.251.%d.2", id)
	ns.HostIf, ns.NSIf = host, peer
	t.Cleanup(func() {
		_ = exec.Command("nft", "delete", "table", "netdev", ns.outageTable()).Run()
		_ = exec.Command("ip", "link", "del", host).Run()
	})
	// An outage table left by a dead test that had this id.
	_ = exec.Command("nft", "delete", "table", "netdev", ns.outageTable()).Run()
	ns.must("ip", "link", "set", peer, "netns", ns.Name)
	ns.must("ip", "addr", "add", ns.HostIP+"/24", "dev", host)
	ns.must("ip", "link", "set", host, "up")
	ns.Exec("ip", "link", "set", "lo", "up")
	ns.Exec("ip", "addr", "add", ns.NSIP+"/24", "dev", peer)
	ns.Exec("ip", "link", "set", peer, "up")
	ns.Exec("ip", "route", "add", "default", "via", ns.HostIP)
	return ns
}

// sweepDead deletes the namespaces (and with them their veths) that test
// processes no longer alive left behind (killed before their cleanup):
// they would hold veth ids and addresses for good.
func sweepDead() {
	names, _ := filepath.Glob("/var/run/netns/vc*-*")
	for _, path := range names {
		name := filepath.Base(path)
		pid, _, ok := strings.Cut(strings.TrimPrefix(name, "vc"), "-")
		if !ok || pid == "" || strings.Trim(pid, "0123456789") != "" {
			continue
		}
		if _, err := os.Stat("/proc/" + pid); err == nil {
			continue // alive (or a new process with its pid: leave it)
		}
		_ = exec.Command("ip", "netns", "del", name).Run()
	}
}

// Exec runs a command inside the namespace, failing the test on error.
func (ns *NS) Exec(args ...string) {
	ns.t.Helper()
	ns.must(append([]string{"ip", "netns", "exec", ns.Name}, args...)...)
}

// BlockUDP makes the namespace's firewall drop every UDP datagram, in and out.
func (ns *NS) BlockUDP() {
	ns.t.Helper()
	ns.Exec("nft", "add table inet block; "+
		"add chain inet block out { type filter hook output priority 0; }; "+
		"add chain inet block in { type filter hook input priority 0; }; "+
		"add rule inet block out meta l4proto udp drop; "+
		"add rule inet block in meta l4proto udp drop")
}

// UDPLoss makes the namespace's firewall drop the given percentage of UDP
// datagrams at random, in each direction (netem is not available here).
func (ns *NS) UDPLoss(percent int) {
	ns.t.Helper()
	rule := fmt.Sprintf("meta l4proto udp numgen random mod 100 < %d drop", percent)
	ns.Exec("nft", "add table inet lossy; "+
		"add chain inet lossy out { type filter hook output priority 0; }; "+
		"add chain inet lossy in { type filter hook input priority 0; }; "+
		"add rule inet lossy out "+rule+"; add rule inet lossy in "+rule)
}

// outageTable names the host's nftables table of DropAll (per veth, so
// namespaces of concurrent tests do not collide).
func (ns *NS) outageTable() string { return "outage_" + ns.HostIf }

// DropAll cuts the namespace off, as a network that goes dark: every
// packet in and out of it is dropped (ARP included), silently. The drops
// happen at the ingress of each end of the veth, so senders see no error
// (an output-hook drop would fail their send calls with EPERM, which a real
// outage does not). The namespace's loopback is untouched. Restore undoes it.
func (ns *NS) DropAll() {
	ns.t.Helper()
	chain := func(table, dev string) string {
		return fmt.Sprintf("add table netdev %s; add chain netdev %s in { type filter hook ingress device %s priority 0; policy drop; }", table, table, dev)
	}
	ns.must("nft", chain(ns.outageTable(), ns.HostIf))
	ns.Exec("nft", chain("outage", ns.NSIf))
}

// Restore ends a DropAll outage.
func (ns *NS) Restore() {
	ns.t.Helper()
	ns.must("nft", "delete", "table", "netdev", ns.outageTable())
	ns.Exec("nft", "delete", "table", "netdev", "outage")
}

// LimitDownlink caps what the host sends into the namespace (the
// namespace's downlink) with a token bucket, e.g. rate "300kbit".
func (ns *NS) LimitDownlink(rate string) {
	ns.t.Helper()
	ns.must("tc", "qdisc", "replace", "dev", ns.HostIf, "root", "tbf", "rate", rate, "burst", "16kbit", "latency", "200ms")
}

// Unlimit removes the downlink cap.
func (ns *NS) Unlimit() {
	ns.t.Helper()
	ns.must("tc", "qdisc", "del", "dev", ns.HostIf, "root")
}

// Wrapper writes an executable that runs binary inside the namespace, for
// tools that take a program path (chromedp's ExecPath).
func (ns *NS) Wrapper(binary string) string {
	ns.t.Helper()
	path := filepath.Join(ns.t.TempDir(), "in-netns")
	script := fmt.Sprintf("#!/bin/sh\nexec ip netns exec %s %s \"$@\"\n", ns.Name, binary)
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		ns.t.Fatal(err)
	}
	return path
}

func (ns *NS) must(args ...string) {
	ns.t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		ns.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// OnlyTCPPort makes the namespace's firewall drop all UDP and all TCP but
// to and from port (the namespace's loopback stays open): a network that
// lets out nothing but, say, TCP 443.
func (ns *NS) OnlyTCPPort(port int) {
	ns.t.Helper()
	ns.Exec("nft", fmt.Sprintf("add table inet oneport; "+
		"add chain inet oneport out { type filter hook output priority 0; }; "+
		"add chain inet oneport in { type filter hook input priority 0; }; "+
		"add rule inet oneport out oifname lo accept; "+
		"add rule inet oneport in iifname lo accept; "+
		"add rule inet oneport out meta l4proto udp drop; "+
		"add rule inet oneport in meta l4proto udp drop; "+
		"add rule inet oneport out tcp dport != %d drop; "+
		"add rule inet oneport in tcp sport != %d drop", port, port))
}
