package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"time"
)

// Row is one measured step.
type Row struct {
	Target      string    `json:"target"` // server, floor, floor-srtp
	Calls       int       `json:"calls"`
	FwdPPS      float64   `json:"forwarded_pps"`
	CPUPercent  float64   `json:"cpu_percent,omitempty"` // of one core
	CPUPerPktUS float64   `json:"cpu_us_per_packet,omitempty"`
	P50MS       float64   `json:"p50_ms"`
	P99MS       float64   `json:"p99_ms"`
	Loss        float64   `json:"loss"`       // fraction, all calls
	WorstLoss   float64   `json:"worst_loss"` // fraction, worst call
	Reordered   uint64    `json:"reordered"`
	Duplicates  uint64    `json:"duplicates"`
	Corrupt     uint64    `json:"corrupt"`
	RSSPerCall  float64   `json:"rss_per_call_mib,omitempty"`
	RSSMiB      float64   `json:"rss_mib,omitempty"`
	SetupP50MS  float64   `json:"setup_p50_ms,omitempty"` // the caller's login to first media both ways: of the -setup-probes calls set up one at a time after the window (with Calls running), else of the calls added in this step
	SetupP99MS  float64   `json:"setup_p99_ms,omitempty"`
	SetupProbes int       `json:"setup_probes,omitempty"`
	SetupPhases *phasesMS `json:"setup_phases_p50_ms,omitempty"` // of the probes
	Load1       float64   `json:"loadavg_1m"`
	ClientCPU   float64   `json:"client_cpu_percent"`      // this tool's own CPU, of one core: when it nears the cores it may use, the clients limit the measurement
	ServerDrops uint64    `json:"server_socket_drops"`     // kernel drops on the server's UDP sockets in the window (full receive buffer)
	ClientDrops uint64    `json:"client_socket_drops"`     // the same on this tool's sockets: the clients could not keep up
	Failed      int       `json:"failed_setups,omitempty"` // calls of this step that did not come up (not measured)
	RelayOnly   bool      `json:"relay_only,omitempty"`    // clients relayed through TURN (embedded unless the target names another)
	// Rows of -turn-compare: the TURN server's own process (ours or
	// coturn); CPU per relayed packet counts two relayed packets per
	// forwarded media packet.
	TURNCPUPercent float64 `json:"turn_cpu_percent,omitempty"`
	TURNPerPktUS   float64 `json:"turn_cpu_us_per_relayed_packet,omitempty"`
	Broken         bool    `json:"broken,omitempty"`
}

// Report is the whole run.
type Report struct {
	Started  time.Time `json:"started"`
	CPUs     int       `json:"cpus"`
	Profile  mediaProfile
	Rows     []Row       `json:"rows"`
	Ratios   []Ratio     `json:"ratios,omitempty"`
	TURN     []TURNRatio `json:"turn,omitempty"`
	Failures []string    `json:"failures,omitempty"`
}

// Ratio compares the server with the floors at one step.
type Ratio struct {
	Calls       int     `json:"calls"`
	VsFloor     float64 `json:"x_floor"`
	VsFloorSRTP float64 `json:"x_floor_srtp"`
}

// call is one running call of any target.
type call interface {
	receivers() []*receiver
	close()
}

// target starts calls of one kind and knows its process.
type target struct {
	name    string
	pid     int
	turnPID int // a separate TURN server's process, measured too
	start   func(ctx context.Context, i int) (call, error)
	setup   func(c call) time.Duration
	// phases splits a call's setup (nil: the target has none).
	phases func(c call) setupPhases
}

func run(ctx context.Context, o options) (*Report, error) {
	rep := &Report{Started: time.Now().UTC(), CPUs: numCPU(), Profile: o.Prof}
	srv, stop, err := serverTarget(ctx, o)
	if err != nil {
		return nil, err
	}
	rows, err := measure(ctx, o, srv, o.Steps)
	stop()
	rep.Rows = append(rep.Rows, rows...)
	if err != nil {
		return rep, err
	}
	var ran []int
	for _, r := range rows {
		if r.Calls > 0 { // not the set-up probes' row with no calls running
			ran = append(ran, r.Calls)
		}
	}
	if o.TURNCompare {
		rows, err := turnTargets(ctx, o, ran)
		rep.Rows = append(rep.Rows, rows...)
		rep.TURN = turnRatios(rep.Rows)
		if err != nil {
			return rep, err
		}
	}
	if !o.Floor {
		return rep, nil
	}
	for _, mode := range []string{"plain", "srtp"} {
		rp, err := startRelay(mode, 4<<20, o.ServerCPUs)
		if err != nil {
			return rep, err
		}
		name := "floor"
		if mode == "srtp" {
			name = "floor-srtp"
		}
		t := &target{name: name, pid: rp.pid(), start: func(ctx context.Context, i int) (call, error) {
			c, err := startUDPCall(ctx, rp.addr, i, mode == "srtp", o.Prof)
			if err != nil {
				return nil, err
			}
			return c, nil
		}}
		rows, err := measure(ctx, o, t, ran)
		rp.close()
		rep.Rows = append(rep.Rows, rows...)
		if err != nil {
			return rep, err
		}
	}
	rep.Ratios = ratios(rep.Rows)
	return rep, nil
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	n := 0
	for _, l := range slices.Collect(splitLines(string(b))) {
		if len(l) > 9 && l[:9] == "processor" {
			n++
		}
	}
	return n
}

func splitLines(s string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for len(s) > 0 {
			i := 0
			for i < len(s) && s[i] != '\n' {
				i++
			}
			if !yield(s[:i]) {
				return
			}
			if i < len(s) {
				i++
			}
			s = s[i:]
		}
	}
}

// serverTarget starts (or points at) the server and returns a target for
// it and a function that stops what was started.
func serverTarget(ctx context.Context, o options) (*target, func(), error) {
	wsURL, pid := o.URL, o.PID
	stop := func() {}
	if o.ServerBin != "" {
		s, err := startServer(ctx, o.ServerBin, o.ServerCPUs, o.ServerArgs, o.ServerLog, o.RelayOnly)
		if err != nil {
			return nil, nil, err
		}
		wsURL, pid, stop = s.url, s.pid(), s.close
	}
	api, err := newAPI()
	if err != nil {
		stop()
		return nil, nil, err
	}
	local := localAddrs(wsURL)
	t := &target{name: "server", pid: pid,
		start: func(ctx context.Context, i int) (call, error) {
			c, err := startRTCCall(ctx, api, wsURL, i, local, o.RelayOnly, o.Prof, o.gate)
			if err != nil {
				return nil, err
			}
			return c, nil
		},
		setup:  func(c call) time.Duration { return c.(*rtcCall).setup },
		phases: func(c call) setupPhases { return c.(*rtcCall).phases },
	}
	return t, stop, nil
}

// localAddrs spreads clients of a loopback server over 127.x source
// addresses, so that per-address limits count each apart.
func localAddrs(wsURL string) func(int) *net.TCPAddr {
	u, err := url.Parse(wsURL)
	if err != nil {
		return func(int) *net.TCPAddr { return nil }
	}
	ip := net.ParseIP(u.Hostname())
	if u.Hostname() == "localhost" || (ip != nil && ip.To4() != nil && ip.IsLoopback()) {
		return func(i int) *net.TCPAddr {
			return &net.TCPAddr{IP: net.IPv4(127, 100, byte(i/250), byte(i%250+1))}
		}
	}
	return func(int) *net.TCPAddr { return nil }
}

// measure runs the steps on one target: it adds calls up to each step's
// count, lets them settle and measures a window; when ramping it stops at
// the first step whose quality breaks.
func measure(ctx context.Context, o options, t *target, steps []int) ([]Row, error) {
	var calls []call
	defer func() {
		var wg sync.WaitGroup
		for _, c := range calls {
			wg.Add(1)
			go func() { defer wg.Done(); c.close() }()
		}
		wg.Wait()
	}()
	var base procUsage
	if t.pid > 0 {
		base, _ = readProc(t.pid)
	}
	var rows []Row
	if o.SetupProbes > 0 && t.phases != nil {
		row := Row{Target: t.name, RelayOnly: o.RelayOnly, Load1: loadAvg()}
		probeSetup(ctx, o, t, 0, &row)
		rows = append(rows, row)
		progress(o.Progress, "%s\n", row.line())
	}
	for _, n := range steps {
		added, failed, err := addCalls(ctx, o, t, &calls, n)
		if err != nil {
			progress(o.Progress, "%s: %d of %d new calls failed to come up: %v\n", t.name, failed, n, err)
			if len(calls) == 0 || ctx.Err() != nil {
				return rows, fmt.Errorf("%s: setting up %d calls: %w", t.name, n, err)
			}
		}
		progress(o.Progress, "%s: %d calls up, settling\n", t.name, len(calls))
		if err := sleep(ctx, o.Warmup); err != nil {
			return rows, err
		}
		row, err := measureWindow(ctx, o, t, calls)
		if err != nil {
			return rows, err
		}
		row.Failed = failed
		if t.pid > 0 && row.RSSMiB > 0 {
			row.RSSPerCall = (row.RSSMiB - float64(base.RSS)/(1<<20)) / float64(n)
		}
		if t.setup != nil && len(added) > 0 {
			var d []time.Duration
			for _, c := range added {
				d = append(d, t.setup(c))
			}
			slices.Sort(d)
			row.SetupP50MS = ms(d[len(d)/2])
		}
		if o.SetupProbes > 0 && t.phases != nil {
			probeSetup(ctx, o, t, len(calls), &row)
		}
		row.Broken = row.Loss > o.MaxLoss || time.Duration(row.P99MS*float64(time.Millisecond)) > o.MaxP99
		rows = append(rows, row)
		progress(o.Progress, "%s\n", row.line())
		if row.Broken && o.Ramp > 0 {
			break
		}
	}
	return rows, nil
}

func addCalls(ctx context.Context, o options, t *target, calls *[]call, n int) (added []call, failed int, err error) {
	first := len(*calls)
	want := n - first
	out := make([]call, want)
	errs := make([]error, want)
	sem := make(chan struct{}, o.Parallel)
	var wg sync.WaitGroup
	for k := range want {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[k], errs[k] = t.start(ctx, first+k)
		}()
	}
	wg.Wait()
	for i, c := range out {
		if errs[i] != nil {
			failed++
		}
		if c != nil {
			*calls = append(*calls, c)
			added = append(added, c)
		}
	}
	return added, failed, errors.Join(errs...)
}

// measureWindow measures one window over all calls.
func measureWindow(ctx context.Context, o options, t *target, calls []call) (Row, error) {
	row := Row{Target: t.name, Calls: len(calls), RelayOnly: o.RelayOnly}
	for _, c := range calls {
		for _, r := range c.receivers() {
			r.snapshot()
		}
	}
	var u0 procUsage
	var sd0 uint64
	if t.pid > 0 {
		u0, _ = readProc(t.pid)
		sd0, _ = udpDrops(t.pid)
	}
	var turn0 procUsage
	if t.turnPID > 0 {
		turn0, _ = readProc(t.turnPID)
	}
	cd0, _ := udpDrops(os.Getpid())
	self0, _ := readProc(os.Getpid())
	start := time.Now()
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	end := start.Add(o.Measure)
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return row, ctx.Err()
		case <-tk.C:
			progress(o.Progress, "\r%s: %d calls, %2.0f/%2.0f s  ", t.name, len(calls), time.Since(start).Seconds(), o.Measure.Seconds())
		}
	}
	var total window
	for _, c := range calls {
		var cw window
		for _, r := range c.receivers() {
			w := r.snapshot()
			cw.merge(&w)
		}
		row.WorstLoss = max(row.WorstLoss, cw.loss())
		total.merge(&cw)
	}
	el := time.Since(start)
	progress(o.Progress, "\r")
	row.FwdPPS = float64(total.Received) / el.Seconds()
	row.Loss = total.loss()
	row.Reordered, row.Duplicates, row.Corrupt = total.Reordered, total.Dup, total.Corrupt
	row.P50MS, row.P99MS = ms(total.Lat.quantile(0.5)), ms(total.Lat.quantile(0.99))
	row.Load1 = loadAvg()
	if self1, err := readProc(os.Getpid()); err == nil && t.pid != os.Getpid() {
		row.ClientCPU = 100 * (self1.CPU - self0.CPU).Seconds() / el.Seconds()
	}
	if cd1, ok := udpDrops(os.Getpid()); ok {
		row.ClientDrops = cd1 - cd0
	}
	if t.pid > 0 && t.pid != os.Getpid() {
		if _, err := readProc(t.pid); err != nil {
			// Its numbers would be garbage (drops of sockets it no
			// longer holds, RSS 0): say so instead.
			return row, fmt.Errorf("%s: the server (pid %d) exited during the measurement with %d calls: %w", t.name, t.pid, len(calls), err)
		}
		if sd1, ok := udpDrops(t.pid); ok && sd1 >= sd0 {
			row.ServerDrops = sd1 - sd0
		}
	}
	if t.pid > 0 {
		if u1, err := readProc(t.pid); err == nil {
			cpu := u1.CPU - u0.CPU
			row.CPUPercent = 100 * cpu.Seconds() / el.Seconds()
			if total.Received > 0 {
				row.CPUPerPktUS = float64(cpu.Microseconds()) / float64(total.Received)
			}
			row.RSSMiB = float64(u1.RSS) / (1 << 20)
		}
	}
	if t.turnPID > 0 {
		if u1, err := readProc(t.turnPID); err == nil {
			cpu := u1.CPU - turn0.CPU
			row.TURNCPUPercent = 100 * cpu.Seconds() / el.Seconds()
			if total.Received > 0 {
				row.TURNPerPktUS = float64(cpu.Microseconds()) / float64(2*total.Received)
			}
		}
	}
	return row, nil
}

// probeSetup sets up o.SetupProbes calls one at a time while running
// calls carry their load, records each one's setup and closes it.
func probeSetup(ctx context.Context, o options, t *target, running int, row *Row) {
	var d []time.Duration
	var ph []setupPhases
	for k := range o.SetupProbes {
		if ctx.Err() != nil {
			return
		}
		c, err := t.start(ctx, running+k)
		if err != nil {
			row.Failed++
			progress(o.Progress, "%s: setup probe with %d running failed: %v\n", t.name, running, err)
			continue
		}
		d = append(d, t.setup(c))
		ph = append(ph, t.phases(c))
		c.close()
	}
	if len(d) == 0 {
		return
	}
	slices.Sort(d)
	row.SetupProbes = len(d)
	row.SetupP50MS, row.SetupP99MS = ms(quantile(d, 0.5)), ms(quantile(d, 0.99))
	row.SetupPhases = medianPhases(ph)
}

// quantile of sorted d (nearest rank).
func quantile(d []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(d)) + 0.5)
	return d[min(max(i-1, 0), len(d)-1)]
}

// phasesMS are setup milestones in milliseconds from the caller's login.
type phasesMS struct {
	Login, Accepted, ICE, DTLS, Media float64
}

func medianPhases(ph []setupPhases) *phasesMS {
	med := func(get func(setupPhases) time.Duration) float64 {
		var d []time.Duration
		for _, p := range ph {
			d = append(d, get(p))
		}
		slices.Sort(d)
		return ms(quantile(d, 0.5))
	}
	return &phasesMS{
		Login:    med(func(p setupPhases) time.Duration { return p.Login }),
		Accepted: med(func(p setupPhases) time.Duration { return p.Accepted }),
		ICE:      med(func(p setupPhases) time.Duration { return p.ICE }),
		DTLS:     med(func(p setupPhases) time.Duration { return p.DTLS }),
		Media:    med(func(p setupPhases) time.Duration { return p.Media }),
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func progress(w io.Writer, f string, a ...any) {
	if w != nil {
		fmt.Fprintf(w, f, a...)
	}
}

func ratios(rows []Row) []Ratio {
	get := func(target string, calls int) float64 {
		for _, r := range rows {
			if r.Target == target && r.Calls == calls {
				return r.CPUPerPktUS
			}
		}
		return 0
	}
	var out []Ratio
	for _, r := range rows {
		if r.Target != "server" || r.CPUPerPktUS == 0 {
			continue
		}
		q := Ratio{Calls: r.Calls}
		if f := get("floor", r.Calls); f > 0 {
			q.VsFloor = r.CPUPerPktUS / f
		}
		if f := get("floor-srtp", r.Calls); f > 0 {
			q.VsFloorSRTP = r.CPUPerPktUS / f
		}
		out = append(out, q)
	}
	return out
}

func (r Row) line() string {
	failed := ""
	if r.Failed > 0 {
		failed = fmt.Sprintf(" (%d failed to set up)", r.Failed)
	}
	if r.SetupProbes > 0 {
		failed += fmt.Sprintf(" [setup of %d probes: p50 %.0f ms, p99 %.0f ms", r.SetupProbes, r.SetupP50MS, r.SetupP99MS)
		if p := r.SetupPhases; p != nil {
			failed += fmt.Sprintf("; p50 login %.0f, accepted %.0f, ICE %.0f, DTLS %.0f, media %.0f ms", p.Login, p.Accepted, p.ICE, p.DTLS, p.Media)
		}
		failed += "]"
	}
	if r.TURNCPUPercent > 0 {
		failed += fmt.Sprintf(" [TURN process cpu %.1f%%, %.2f µs/relayed pkt]", r.TURNCPUPercent, r.TURNPerPktUS)
	}
	return fmt.Sprintf("%-10s %5d calls%s %8.0f pkt/s  cpu %5.1f%%  %6.2f µs/pkt  p50 %6.2f ms  p99 %6.2f ms  loss %.3f%% (worst call %.3f%%)  rss/call %5.2f MiB  setup p50 %4.0f ms  drops server/client %d/%d  client cpu %.0f%%  load %.1f",
		r.Target, r.Calls, failed, r.FwdPPS, r.CPUPercent, r.CPUPerPktUS, r.P50MS, r.P99MS, 100*r.Loss, 100*r.WorstLoss, r.RSSPerCall, r.SetupP50MS, r.ServerDrops, r.ClientDrops, r.ClientCPU, r.Load1)
}

func (rep *Report) print(w io.Writer) {
	fmt.Fprintf(w, "%d CPUs; per participant: audio %d B x 50/s, video %.2f Mbit/s at %d fps in <=%d B packets, keyframe every %v (x%d)\n\n",
		rep.CPUs, rep.Profile.AudioBytes, float64(rep.Profile.VideoBitrate)/1e6, rep.Profile.FPS, rep.Profile.MTU, rep.Profile.KeyInterval, rep.Profile.KeyFactor)
	fmt.Fprintf(w, "| target | calls (failed) | fwd pkt/s | CPU %% | µs/pkt | p50 ms | p99 ms | loss %% | worst call loss %% | reord | dup | corrupt | RSS/call MiB | setup p50 ms | socket drops server/client | client CPU %% | load1 |\n")
	fmt.Fprintf(w, "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Rows {
		fmt.Fprintf(w, "| %s | %d (%d) | %.0f | %.1f | %.2f | %.2f | %.2f | %.3f | %.3f | %d | %d | %d | %.2f | %.0f | %d/%d | %.0f | %.1f |\n",
			r.Target, r.Calls, r.Failed, r.FwdPPS, r.CPUPercent, r.CPUPerPktUS, r.P50MS, r.P99MS, 100*r.Loss, 100*r.WorstLoss,
			r.Reordered, r.Duplicates, r.Corrupt, r.RSSPerCall, r.SetupP50MS, r.ServerDrops, r.ClientDrops, r.ClientCPU, r.Load1)
	}
	printSetup(w, rep.Rows)
	printTURNRatios(w, rep.TURN)
	if len(rep.Ratios) > 0 {
		fmt.Fprintf(w, "\n| calls | server µs/pkt ÷ floor | ÷ floor with SRTP |\n|---|---|---|\n")
		for _, q := range rep.Ratios {
			fmt.Fprintf(w, "| %d | %.2f× | %.2f× |\n", q.Calls, q.VsFloor, q.VsFloorSRTP)
		}
	}
}

// printSetup tables the setup probes: p50/p99 and the p50 of each phase.
func printSetup(w io.Writer, rows []Row) {
	head := false
	for _, r := range rows {
		if r.SetupProbes == 0 || r.SetupPhases == nil {
			continue
		}
		if !head {
			fmt.Fprintf(w, "\nCall setup, the caller's login to the first media packet at both ends, of calls set up one at a time with the others running (phases: p50 ms from the login):\n\n")
			fmt.Fprintf(w, "| target | calls running | probes | setup p50 ms | p99 ms | login | accepted | ICE connected | DTLS connected | first media |\n|---|---|---|---|---|---|---|---|---|---|\n")
			head = true
		}
		p := r.SetupPhases
		fmt.Fprintf(w, "| %s | %d | %d | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f | %.0f |\n", r.Target, r.Calls, r.SetupProbes, r.SetupP50MS, r.SetupP99MS,
			p.Login, p.Accepted, p.ICE, p.DTLS, p.Media)
	}
}
