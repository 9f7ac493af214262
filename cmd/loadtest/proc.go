package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// procUsage is a process's CPU time so far and its resident set.
type procUsage struct {
	CPU time.Duration
	RSS int64 // bytes
}

const clockTick = 10 * time.Millisecond // USER_HZ is 100 on Linux

// errExited: the measured process has exited.
var errExited = errors.New("process exited")

// readProc reads /proc/<pid>/stat (utime + stime) and /proc/<pid>/status
// (VmRSS).
func readProc(pid int) (procUsage, error) {
	var u procUsage
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return u, errors.New("unexpected /proc stat")
	}
	f := strings.Fields(s[i+1:])
	// Fields after the command: state(0) ... utime(11) stime(12).
	if len(f) < 13 {
		return u, errors.New("short /proc stat")
	}
	if f[0] == "Z" || f[0] == "X" { // exited (a child not reaped yet stays a zombie)
		return u, errExited
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return u, errors.New("bad /proc stat times")
	}
	u.CPU = time.Duration(ut+st) * clockTick
	st2, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	defer st2.Close()
	sc := bufio.NewScanner(st2)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			u.RSS = kb << 10
		}
	}
	return u, nil
}

// loadAvg returns the 1-minute load average.
func loadAvg() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

// serverProcess is a videochat server this tool started.
type serverProcess struct {
	cmd *exec.Cmd
	url string
}

func freePort(network string) (int, error) {
	if network == "udp" {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			return 0, err
		}
		defer c.Close()
		return c.LocalAddr().(*net.UDPAddr).Port, nil
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startServer runs bin on loopback with limits raised for load, and waits
// until it answers HTTP.
func startServer(ctx context.Context, bin, cpus, extra, logPath string, withTURN bool) (*serverProcess, error) {
	port, err := freePort("tcp")
	if err != nil {
		return nil, err
	}
	turnAddr := ""
	if withTURN {
		tp, err := freePort("udp")
		if err != nil {
			return nil, err
		}
		turnAddr = fmt.Sprintf("127.0.0.1:%d", tp)
	}
	// -https-addr "": the LAN HTTPS listener's fixed default port (:9443)
	// would make a second run on the machine fail to start.
	args := []string{"-addr", fmt.Sprintf("127.0.0.1:%d", port), "-udp-port", "0", "-turn-addr", turnAddr, "-https-addr", "",
		"-log-level", "error", "-max-conns", "100000", "-max-conns-per-ip", "100000",
		"-call-attempts", "100000", "-msg-rate", "1000", "-turn-per-ip", "100000"}
	args = append(args, strings.Fields(extra)...)
	cmd := exec.Command(bin, args...)
	if cpus != "" {
		cmd = exec.Command("taskset", append([]string{"-c", cpus, bin}, args...)...)
	}
	if logPath != "" {
		f, err := os.Create(logPath)
		if err != nil {
			return nil, err
		}
		defer f.Close() // the child has its own descriptor
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &serverProcess{cmd: cmd, url: fmt.Sprintf("ws://127.0.0.1:%d/ws", port)}
	health := fmt.Sprintf("http://127.0.0.1:%d/healthz", port)
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(health)
		if err == nil {
			resp.Body.Close()
			return s, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.close()
			return nil, fmt.Errorf("server did not come up: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *serverProcess) pid() int { return s.cmd.Process.Pid }

func (s *serverProcess) close() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { _ = s.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-done
	}
}

// udpDrops sums the kernel's receive drops (full socket buffer) over the
// UDP sockets process pid holds, from /proc/net/udp{,6}.
func udpDrops(pid int) (uint64, bool) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, false
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var total uint64
	for _, f := range []string{"/proc/net/udp", "/proc/net/udp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for i, line := range strings.Split(string(b), "\n") {
			fl := strings.Fields(line)
			if i == 0 || len(fl) < 13 || !inodes[fl[9]] {
				continue
			}
			d, _ := strconv.ParseUint(fl[len(fl)-1], 10, 64)
			total += d
		}
	}
	return total, true
}
