package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
)

// serverProc is the real server binary running as a child process, so that
// its resident memory and file descriptors are its own (not the test's,
// and without the race detector's overhead).
type serverProc struct {
	t       *testing.T
	cmd     *exec.Cmd
	url     string // http://127.0.0.1:port/
	turnUDP string // host:port of the embedded TURN server (UDP)
	exited  chan struct{}
	killed  atomic.Bool // by kill: no clean exit expected

	mu   sync.Mutex
	tail []string // the last log lines, for failures
}

// startServerProc builds the server (without -race) into a temporary
// directory and runs it on ephemeral loopback ports with the given flags
// added. It is stopped with SIGTERM at the end of the test, and must exit
// cleanly within 10 s.
func startServerProc(t *testing.T, args ...string) *serverProc {
	t.Helper()
	return runServerProc(t, buildServer(t), args...)
}

// buildServer builds the server binary (without -race) into a temporary
// directory and returns its path; tests that run several processes build
// it once.
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "videochat")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runServerProc runs the binary bin like startServerProc.
func runServerProc(t *testing.T, bin string, args ...string) *serverProc {
	t.Helper()
	args = append([]string{"-addr", "127.0.0.1:0", "-udp-port", "0", "-turn-addr", "127.0.0.1:0",
		"-https-addr=", "-state-dir", t.TempDir()}, args...)
	p := &serverProc{t: t, cmd: exec.Command(bin, args...), exited: make(chan struct{})}
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go p.readLog(stderr, ready)
	t.Cleanup(p.stop)
	select {
	case <-ready:
	case <-p.exited:
		t.Fatalf("server exited at start:\n%s", p.logTail())
	case <-time.After(30 * time.Second):
		t.Fatalf("server not ready after 30 s:\n%s", p.logTail())
	}
	return p
}

var (
	procURLRe  = regexp.MustCompile(`msg="videochat is running[^"]*" url=(http://\S+)`)
	procTURNRe = regexp.MustCompile(`msg="embedded TURN" udp=(\S+)`)
)

// readLog keeps the last log lines and closes ready once the URL and the
// TURN address are known; it ends (and reaps the process) at EOF.
func (p *serverProc) readLog(r interface{ Read([]byte) (int, error) }, ready chan struct{}) {
	defer close(p.exited)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	signalled := false
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		if m := procTURNRe.FindStringSubmatch(line); m != nil {
			p.turnUDP = m[1]
		}
		if m := procURLRe.FindStringSubmatch(line); m != nil {
			p.url = strings.Replace(m[1], "localhost", "127.0.0.1", 1)
		}
		if p.tail = append(p.tail, line); len(p.tail) > 200 {
			p.tail = p.tail[1:]
		}
		done := p.url != "" && p.turnUDP != ""
		p.mu.Unlock()
		if done && !signalled {
			signalled = true
			close(ready)
		}
	}
	_ = p.cmd.Wait()
}

func (p *serverProc) logTail() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

func (p *serverProc) wsURL() string { return wsURLOf(p.url, "/ws") }

// stop sends SIGTERM and waits for a clean exit within the shutdown bound
// (5 s in main) plus slack.
func (p *serverProc) stop() {
	if p.killed.Load() {
		return
	}
	start := time.Now()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.t.Errorf("server did not exit within 10 s of SIGTERM:\n%s", p.logTail())
		return
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		p.t.Errorf("server exited with %d after SIGTERM:\n%s", code, p.logTail())
	}
	p.t.Logf("server shut down in %v", time.Since(start).Round(time.Millisecond))
}

// kill sends SIGKILL (no goodbye of any kind, as after a crash or a power
// cut) and waits until the process is gone.
func (p *serverProc) kill() {
	p.killed.Store(true)
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// rssMiB is the server's resident set in MiB.
func (p *serverProc) rssMiB() float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kib, _ := strconv.Atoi(f[1])
			return float64(kib) / 1024
		}
	}
	return -1
}

// fds is the number of the server's open file descriptors.
func (p *serverProc) fds() int {
	es, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	return len(es)
}

// procPeaks samples the server's RSS and FDs every 50 ms until stopped.
type procPeaks struct {
	stop, done chan struct{}
	rss        float64
	fds        int
}

func (p *serverProc) sample() *procPeaks {
	s := &procPeaks{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			s.rss, s.fds = max(s.rss, p.rssMiB()), max(s.fds, p.fds())
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

func (s *procPeaks) finish() (rss float64, fds int) { close(s.stop); <-s.done; return s.rss, s.fds }

// waitRSSBelow waits up to d for the server's RSS to drop to limit (the Go
// runtime returns freed memory to the OS in the background) and returns
// the last value.
func (p *serverProc) waitRSSBelow(limit float64, d time.Duration) float64 {
	var rss float64
	for deadline := time.Now().Add(d); ; time.Sleep(200 * time.Millisecond) {
		if rss = p.rssMiB(); rss <= limit || time.Now().After(deadline) {
			return rss
		}
	}
}

// legitRelayCall: two users log in, call and exchange media through the
// server's TURN (relay-only pion clients using the credentials from their
// login), so login, calling and TURN allocation are all exercised.
func legitRelayCall(t *testing.T, wsURL, a, b string) (alice, bob *wsPeer, stop func()) {
	t.Helper()
	opts := rtctest.Options{RelayOnly: true}
	alice, bob = dialPeer(t, wsURL, a, opts), dialPeer(t, wsURL, b, opts)
	alice.call(b)
	alice.expect("answer")
	bob.expect("offer")
	alice.expect("accepted")
	stopA, stopB := alice.StartSending(), bob.StartSending()
	for _, p := range []*wsPeer{alice, bob} {
		if err := p.WaitPackets(webrtc.RTPCodecTypeVideo, 20, 20*time.Second); err != nil {
			t.Fatalf("%s over TURN: %v", p.name, err)
		}
		pair, err := p.PC.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
		if err != nil || pair == nil || pair.Local.Typ != webrtc.ICECandidateTypeRelay {
			t.Fatalf("%s: selected pair %v (%v), want a relay", p.name, pair, err)
		}
	}
	return alice, bob, func() { stopA(); stopB() }
}

// checkMedia asserts that both sides kept receiving video through a fault.
// The senders share this process with the fault's clients, so on a loaded
// machine they send less; what the server must not do is hold the call's
// packets back (see assertNotHeld).
func checkMedia(t *testing.T, what string, wa, wb *mediaWatch) {
	t.Helper()
	minA, heldA := wa.finish()
	minB, heldB := wb.finish()
	t.Logf("%s: slowest second of video beside it: %d / %d packets (50/s sent); at most %d / %d held over 1 s", what, minA, minB, heldA, heldB)
	assertNotHeld(t, heldA)
	assertNotHeld(t, heldB)
}
