package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"time"

	"videochat/turn"
)

// The TURN comparison (-turn-compare): the same relay-only load through two
// TURN servers, each in its own process so its CPU is measured alone: this
// project's turn package (this binary with -turn-child, configured as the
// server's embedded TURN is) and Debian's coturn (turnserver, started here
// with no configuration file). The videochat server uses either through
// -turn-external with the shared REST secret, exactly as it would use a
// deployed coturn, so its own CPU is then the SFU's alone.
//
// Every forwarded media packet crosses the TURN server twice (publisher ->
// its allocation -> SFU, SFU -> the subscriber's allocation -> subscriber),
// so relayed packets are counted as twice the forwarded media packets the
// receivers saw (RTCP and ICE consent checks ride along uncounted, the same
// for both servers).

// turnProc is a TURN server in a child process.
type turnProc struct {
	name  string
	cmd   *exec.Cmd
	stdin io.WriteCloser // ours: closing it stops the child
	dir   string         // coturn: its temp dir
	url   string         // turn:127.0.0.1:port?transport=udp
}

func (p *turnProc) pid() int { return p.cmd.Process.Pid }

func (p *turnProc) close() {
	if p.stdin != nil {
		_ = p.stdin.Close()
	} else {
		_ = p.cmd.Process.Signal(os.Interrupt)
	}
	done := make(chan struct{})
	go func() { _ = p.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-done
	}
	if p.dir != "" {
		_ = os.RemoveAll(p.dir)
	}
}

func newSecret() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// mediaPeers are the SFU's media endpoints when it listens on port on every
// interface: each local IPv4 address with that port (pion/turn v4 relays
// over IPv4 only).
func mediaPeers(port int) []netip.AddrPort {
	out := []netip.AddrPort{netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))}
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP.To4()); ok && ipn.IP.To4() != nil && !ip.IsLoopback() {
				out = append(out, netip.AddrPortFrom(ip, uint16(port)))
			}
		}
	}
	return out
}

// newOurTURN builds this project's TURN server as the videochat binary
// configures its embedded one (see app_turn.go), on 127.0.0.1 with an
// ephemeral port, relaying only to the SFU's media port.
func newOurTURN(secret string, mediaPort int) (*turn.Server, error) {
	return turn.New(turn.Config{
		ListenAddr:     "127.0.0.1:0",
		Secret:         []byte(secret),
		AllowedPeers:   mediaPeers(mediaPort),
		SourceQuota:    100000, // as loadtest's -turn-per-ip
		UserQuota:      100,
		MaxAllocations: 100000,
		Logger:         slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
	})
}

// turnChildMain is the child process of -turn-child: it runs our TURN
// server, prints its UDP address and serves until stdin closes.
func turnChildMain(secret string, mediaPort int, profile string) error {
	s, err := newOurTURN(secret, mediaPort)
	if err != nil {
		return err
	}
	if profile != "" {
		f, err := os.Create(profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	fmt.Println(s.UDPAddr().String())
	_, _ = io.Copy(io.Discard, os.Stdin)
	return s.Close()
}

// startOurTURN starts our TURN server in a child process.
func startOurTURN(secret string, mediaPort int, cpus, profile string, procs int) (*turnProc, error) {
	var env []string
	if procs > 0 {
		env = []string{fmt.Sprintf("GOMAXPROCS=%d", procs)}
	}
	cmd, stdin, line, err := startChild(cpus, env, "-turn-child", "-turn-secret", secret,
		"-turn-media-port", fmt.Sprint(mediaPort), "-turn-cpuprofile", profile)
	if cmd == nil {
		return nil, err
	}
	p := &turnProc{name: "turn", cmd: cmd, stdin: stdin}
	if err != nil {
		p.close()
		return nil, fmt.Errorf("our TURN child: %w", err)
	}
	p.url = "turn:" + line + "?transport=udp"
	return p, nil
}

// coturnArgs is coturn's command line: no configuration file (-n), UDP and
// TCP on one loopback port, TURN REST credentials with secret, relay
// addresses on relayIP (where our TURN puts them too), loopback peers
// allowed (the SFU may be reachable only there), no TLS, no CLI, logs and
// database in dir.
func coturnArgs(dir string, port int, secret string, relayIP net.IP) []string {
	return []string{"-n", "--no-cli", "--no-tls", "--no-dtls", "--no-tcp-relay",
		"--listening-ip=127.0.0.1", fmt.Sprintf("--listening-port=%d", port),
		"--relay-ip=" + relayIP.String(),
		"--use-auth-secret", "--static-auth-secret=" + secret, "--realm=videochat",
		"--allow-loopback-peers", "--no-software-attribute",
		"--pidfile=" + filepath.Join(dir, "turnserver.pid"),
		"--userdb=" + filepath.Join(dir, "turndb"),
		"--log-file=" + filepath.Join(dir, "turn.log"), "--simple-log", "--no-stdout-log",
	}
}

// errNoCoturn says how to get coturn.
var errNoCoturn = errors.New("coturn's turnserver not found (apt-get install coturn)")

// startCoturn starts coturn on a free loopback port and waits until it
// answers a STUN binding request.
func startCoturn(ctx context.Context, secret, cpus string) (*turnProc, error) {
	bin, err := exec.LookPath("turnserver")
	if err != nil {
		return nil, errNoCoturn
	}
	dir, err := os.MkdirTemp("", "loadtest-coturn-")
	if err != nil {
		return nil, err
	}
	port, err := freePort("udp")
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	args := coturnArgs(dir, port, secret, relayIPv4())
	cmd := exec.Command(bin, args...)
	if cpus != "" {
		cmd = exec.Command("taskset", append([]string{"-c", cpus, bin}, args...)...)
	}
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	p := &turnProc{name: "coturn", cmd: cmd, dir: dir, url: fmt.Sprintf("turn:127.0.0.1:%d?transport=udp", port)}
	addr := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	deadline := time.Now().Add(10 * time.Second)
	for !stunAnswers(addr) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			log, _ := os.ReadFile(filepath.Join(dir, "turn.log"))
			p.close()
			return nil, fmt.Errorf("coturn did not answer on %v: %s", addr, lastLines(string(log), 5))
		}
	}
	return p, nil
}

// stunAnswers sends one STUN binding request and waits 100 ms for a reply.
func stunAnswers(addr *net.UDPAddr) bool {
	c, err := net.DialUDP("udp4", nil, addr)
	if err != nil {
		return false
	}
	defer c.Close()
	req := make([]byte, 20)
	req[1] = 0x01                                  // binding request
	copy(req[4:8], []byte{0x21, 0x12, 0xa4, 0x42}) // magic cookie
	copy(req[8:], []byte("loadtest-tx1"))          // transaction id
	if _, err := c.Write(req); err != nil {
		return false
	}
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	return err == nil && n >= 20 && buf[0] == 0x01 && buf[1] == 0x01
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimSpace(s), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// relayIPv4 is where relays are bound and advertised: what our TURN picks
// by default (the first non-loopback IPv4 address, else 127.0.0.1).
func relayIPv4() net.IP {
	for _, ap := range mediaPeers(1) {
		if !ap.Addr().IsLoopback() && !ap.Addr().IsLinkLocalUnicast() {
			return net.IP(ap.Addr().AsSlice())
		}
	}
	return net.IPv4(127, 0, 0, 1)
}

// turnTargets measures the relay-only load through our TURN and through
// coturn at the given steps; each server row carries the TURN process's CPU.
func turnTargets(ctx context.Context, o options, steps []int) ([]Row, error) {
	var rows []Row
	for _, which := range []string{"turn", "coturn"} {
		r, err := measureThroughTURN(ctx, o, which, steps)
		rows = append(rows, r...)
		if err != nil {
			return rows, fmt.Errorf("%s: %w", which, err)
		}
	}
	return rows, nil
}

func measureThroughTURN(ctx context.Context, o options, which string, steps []int) ([]Row, error) {
	secret, err := newSecret()
	if err != nil {
		return nil, err
	}
	mediaPort, err := freePort("udp")
	if err != nil {
		return nil, err
	}
	var tp *turnProc
	if which == "coturn" {
		tp, err = startCoturn(ctx, secret, o.ServerCPUs)
	} else {
		tp, err = startOurTURN(secret, mediaPort, o.ServerCPUs, o.TURNProfile, o.TURNProcs)
	}
	if err != nil {
		return nil, err
	}
	defer tp.close()
	so := o
	so.RelayOnly = true
	so.ServerArgs = strings.Join([]string{o.ServerArgs, "-udp-port", fmt.Sprint(mediaPort),
		"-turn-external", tp.url, "-turn-secret", secret}, " ")
	srv, stop, err := serverTarget(ctx, so)
	if err != nil {
		return nil, err
	}
	defer stop()
	srv.name, srv.turnPID = which, tp.pid()
	return measure(ctx, so, srv, steps)
}

// TURNRatio compares the TURN servers at one step.
type TURNRatio struct {
	Calls     int     `json:"calls"`
	OursUS    float64 `json:"turn_us_per_relayed_packet"`
	CoturnUS  float64 `json:"coturn_us_per_relayed_packet"`
	VsCoturn  float64 `json:"x_coturn"`
	Embedded  float64 `json:"embedded_turn_us_per_relayed_packet,omitempty"` // whole server relay-only minus the SFU alone, per relayed packet
	OursCPU   float64 `json:"turn_cpu_percent"`
	CoturnCPU float64 `json:"coturn_cpu_percent"`
}

func turnRatios(rows []Row) []TURNRatio {
	find := func(target string, calls int) *Row {
		for i := range rows {
			if rows[i].Target == target && rows[i].Calls == calls {
				return &rows[i]
			}
		}
		return nil
	}
	var out []TURNRatio
	for _, r := range rows {
		if r.Target != "turn" {
			continue
		}
		c := find("coturn", r.Calls)
		if c == nil || c.TURNPerPktUS == 0 {
			continue
		}
		q := TURNRatio{Calls: r.Calls, OursUS: r.TURNPerPktUS, CoturnUS: c.TURNPerPktUS,
			VsCoturn: r.TURNPerPktUS / c.TURNPerPktUS, OursCPU: r.TURNCPUPercent, CoturnCPU: c.TURNCPUPercent}
		// The embedded TURN's share: the whole relay-only server's CPU
		// minus the SFU's alone (its CPU in the two external runs).
		if e := find("server", r.Calls); e != nil && e.RelayOnly && e.FwdPPS > 0 {
			sfu := (r.CPUPercent + c.CPUPercent) / 2
			q.Embedded = (e.CPUPercent - sfu) / 100 * 1e6 / (2 * e.FwdPPS)
		}
		out = append(out, q)
	}
	return out
}

func printTURNRatios(w io.Writer, qs []TURNRatio) {
	if len(qs) == 0 {
		return
	}
	fmt.Fprintf(w, "\n| calls | our TURN µs/relayed pkt (CPU %%) | coturn µs/relayed pkt (CPU %%) | ours ÷ coturn | embedded TURN µs/relayed pkt (server relay-only − SFU alone) |\n|---|---|---|---|---|\n")
	for _, q := range qs {
		emb := "–"
		if q.Embedded != 0 {
			emb = fmt.Sprintf("%.2f", q.Embedded)
		}
		fmt.Fprintf(w, "| %d | %.2f (%.1f) | %.2f (%.1f) | %.2f× | %s |\n", q.Calls, q.OursUS, q.OursCPU, q.CoturnUS, q.CoturnCPU, q.VsCoturn, emb)
	}
}
