package netns

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNewSkipsTakenID: a veth name held by someone else (another test
// process, a leftover) moves New to the next id; DropAll cuts the namespace
// off both ways and Restore brings it back.
func TestNewSkipsTakenID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip(Hint)
	}
	id := (os.Getpid()*7 + int(counter.Load()) + 1) % 250
	taken := fmt.Sprintf("vch%d", id)
	out, err := exec.Command("ip", "link", "add", taken, "type", "veth", "peer", "name", fmt.Sprintf("vcx%d", id)).CombinedOutput()
	switch {
	case err == nil:
		t.Cleanup(func() { _ = exec.Command("ip", "link", "del", taken).Run() })
	case strings.Contains(string(out), "File exists"):
		// Taken already (another process's, or a leftover): New must skip it all the same.
	default:
		t.Fatalf("ip link add %s: %v\n%s", taken, err, out)
	}

	ns := New(t)
	if ns.HostIf == taken {
		t.Fatalf("New took %s, which was taken", taken)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(ns.HostIP, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// A TCP connect from inside to the host's end of the veth.
	ping := func() error {
		return exec.Command("ip", "netns", "exec", ns.Name, "timeout", "1",
			"bash", "-c", "exec 3<>/dev/tcp/"+ns.HostIP+"/"+fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)).Run()
	}
	if err := ping(); err != nil {
		t.Fatalf("namespace cannot reach the host: %v", err)
	}
	ns.DropAll()
	if ping() == nil {
		t.Fatal("the namespace reached the host during DropAll")
	}
	ns.Restore()
	if err := ping(); err != nil {
		t.Fatalf("nothing gets through after Restore: %v", err)
	}
}
