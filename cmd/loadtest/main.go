// Command loadtest measures how many 1:1 calls a videochat server holds and
// what each forwarded packet costs it. It runs N concurrent calls of pion
// clients speaking the real signaling protocol, each participant sending
// Opus-sized audio (50 packets/s) and VP8-sized video (paced frames in
// ~1,200-byte packets, periodic larger keyframes, keyframes on PLI; NACKs
// answered by pion's responder). Every payload carries a sequence number, a
// send time and a checksum, so receivers measure one-way latency, loss,
// reordering and corruption per call.
//
// It ramps N through the given steps (or in increments until quality breaks:
// loss > 1 % or p99 > 50 ms) and prints a table: calls, forwarded packets/s,
// server CPU (from /proc when the server is local), CPU µs per forwarded
// packet, latency p50/p99, loss, RSS per call, call setup time. In the same
// run it measures the floor, a bare UDP relay doing the same fan-out (plain,
// and with SRTP decrypt+encrypt), and reports the server's cost as a ratio.
//
//	loadtest -server-bin ./videochat -calls 10,25,50       # starts the server itself
//	loadtest -url ws://host:9090/ws -pid 1234 -calls 10    # a running server
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

type options struct {
	URL         string
	ServerBin   string
	ServerCPUs  string
	ServerArgs  string
	ServerLog   string
	PID         int
	Steps       []int
	Ramp        int
	MaxCalls    int
	Warmup      time.Duration
	Measure     time.Duration
	Floor       bool
	RelayOnly   bool
	TURNCompare bool
	SetupProbes int    // calls set up one at a time after each window, for setup time with the step's calls running
	TURNProfile string // our TURN child's CPU profile
	TURNProcs   int    // our TURN child's GOMAXPROCS (0: Go's default)
	JSON        bool
	Parallel    int
	MaxLoss     float64
	MaxP99      time.Duration
	Prof        mediaProfile
	Progress    io.Writer  // nil: none
	gate        *setupGate // tests: hold media until a batch's handshakes are through (nil: none)
}

func main() {
	fs := flag.NewFlagSet("loadtest", flag.ContinueOnError)
	relayMode := fs.String("relay", "", "internal: run as the floor relay (plain or srtp)")
	relayBuf := fs.Int("relay-rcvbuf", 4<<20, "internal: the floor relay's socket buffers")
	turnChild := fs.Bool("turn-child", false, "internal: run as our TURN server for -turn-compare")
	turnSecret := fs.String("turn-secret", "", "internal: with -turn-child, the REST secret")
	turnProf := fs.String("turn-cpuprofile", "", "with -turn-compare: write our TURN process's CPU profile (pprof) here")
	turnMedia := fs.Int("turn-media-port", 0, "internal: with -turn-child, the SFU's media port (the only peer port)")
	o, err := parseFlags(fs, os.Args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(2)
	}
	if *turnChild {
		if err := turnChildMain(*turnSecret, *turnMedia, *turnProf); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest turn:", err)
			os.Exit(1)
		}
		return
	}
	if *relayMode != "" {
		if err := relayMain(*relayMode, *relayBuf); err != nil {
			fmt.Fprintln(os.Stderr, "loadtest relay:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o.Progress = os.Stderr
	o.TURNProfile = *turnProf
	rep, err := run(ctx, o)
	if rep != nil {
		if o.JSON {
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(rep)
		} else {
			rep.print(os.Stdout)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadtest:", err)
		os.Exit(1)
	}
}

func parseFlags(fs *flag.FlagSet, args []string) (options, error) {
	o := options{Prof: defaultProfile()}
	var steps string
	fs.StringVar(&o.URL, "url", "", "WebSocket URL of a running server (e.g. ws://127.0.0.1:9090/ws)")
	fs.StringVar(&o.ServerBin, "server-bin", "", "start this videochat binary on loopback instead of -url, and measure its CPU and RSS")
	fs.StringVar(&o.ServerArgs, "server-args", "", "extra flags for -server-bin (space-separated)")
	fs.StringVar(&o.ServerLog, "server-log", "", "write the started server's output to this file (default: discard)")
	fs.StringVar(&o.ServerCPUs, "server-cpus", "", "pin the started server and floor relays to these CPUs (taskset -c), e.g. 0; run loadtest itself under taskset for the clients")
	fs.IntVar(&o.PID, "pid", 0, "with -url: the server's process id, to read its CPU and RSS from /proc")
	fs.StringVar(&steps, "calls", "10,25,50", "comma-separated numbers of concurrent calls to measure, in increasing order")
	fs.IntVar(&o.Ramp, "ramp", 0, "instead of -calls: add this many calls per step until quality breaks or -max-calls")
	fs.IntVar(&o.MaxCalls, "max-calls", 1000, "with -ramp: stop here")
	fs.DurationVar(&o.Warmup, "warmup", 3*time.Second, "settling time after each step's calls are up")
	fs.DurationVar(&o.Measure, "measure", 10*time.Second, "measurement window per step")
	fs.BoolVar(&o.Floor, "floor", true, "also measure the floor (bare UDP relay, plain and SRTP) at the same steps")
	fs.BoolVar(&o.RelayOnly, "relay-only", false, "clients use only relayed candidates through the server's TURN (ICE servers from the login reply)")
	fs.BoolVar(&o.TURNCompare, "turn-compare", false, "also run the load relay-only through this project's TURN and through coturn (turnserver), each in its own process, at the same steps, and compare their CPU per relayed packet")
	fs.IntVar(&o.TURNProcs, "turn-gomaxprocs", 0, "with -turn-compare: GOMAXPROCS of our TURN process (0: Go's default, one per CPU)")
	fs.BoolVar(&o.JSON, "json", false, "print the report as JSON")
	fs.IntVar(&o.SetupProbes, "setup-probes", 10, "after each step (and before the first, with 0 running) set up this many calls one at a time, each closed after its first media, and report their setup p50/p99 and phases with the step's calls running (0: off)")
	fs.IntVar(&o.Parallel, "parallel", 4, "calls set up at once")
	fs.Float64Var(&o.MaxLoss, "max-loss", 0.01, "quality breaks above this loss fraction")
	fs.DurationVar(&o.MaxP99, "max-p99", 50*time.Millisecond, "quality breaks above this p99 one-way latency")
	fs.IntVar(&o.Prof.AudioBytes, "audio-bytes", o.Prof.AudioBytes, "audio payload size (50 packets/s)")
	fs.IntVar(&o.Prof.VideoBitrate, "video-bitrate", o.Prof.VideoBitrate, "video bits/s per participant")
	fs.IntVar(&o.Prof.FPS, "fps", o.Prof.FPS, "video frames/s")
	fs.IntVar(&o.Prof.MTU, "mtu", o.Prof.MTU, "largest video payload")
	fs.DurationVar(&o.Prof.KeyInterval, "keyframe-interval", o.Prof.KeyInterval, "periodic keyframes")
	fs.IntVar(&o.Prof.KeyFactor, "keyframe-factor", o.Prof.KeyFactor, "a keyframe is this many times an interframe")
	fs.Float64Var(&o.Prof.Drop, "inject-loss", 0, "senders skip this fraction of packets (unrepairable): for checking the measurement")
	fs.DurationVar(&o.Prof.Delay, "inject-delay", 0, "senders stamp packets this much earlier: for checking the measurement")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if (o.URL == "") == (o.ServerBin == "") && fs.Lookup("relay").Value.String() == "" && fs.Lookup("turn-child").Value.String() != "true" {
		return o, errors.New("give exactly one of -url and -server-bin")
	}
	if o.TURNCompare && o.ServerBin == "" {
		return o, errors.New("-turn-compare needs -server-bin (it starts the server with each TURN server)")
	}
	if o.Ramp > 0 {
		for n := o.Ramp; n <= o.MaxCalls; n += o.Ramp {
			o.Steps = append(o.Steps, n)
		}
	} else {
		prev := 0
		for _, s := range strings.Split(steps, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil || n <= prev {
				return o, fmt.Errorf("-calls: want increasing positive numbers, got %q", steps)
			}
			o.Steps, prev = append(o.Steps, n), n
		}
	}
	if o.Parallel < 1 || o.Prof.FPS < 1 || o.Prof.MTU < 64 || o.Prof.AudioBytes < minPayload || o.Prof.KeyFactor < 1 {
		return o, errors.New("bad media or parallel settings")
	}
	return o, nil
}
