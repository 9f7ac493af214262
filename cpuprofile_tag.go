//go:build cpuprofile

// A CPU profile of the running server for measurements (not in the normal
// build): `go build -tags cpuprofile`, then VIDEOCHAT_CPUPROFILE=file
// profiles from VIDEOCHAT_CPUPROFILE_AT (default 20s) after start for
// VIDEOCHAT_CPUPROFILE_FOR (default 10s), e.g. a loadtest step's window.
// With VIDEOCHAT_MEMPROFILE=file it also writes the allocation profile at
// the start (file.base) and end (file) of that window: `go tool pprof
// -sample_index=alloc_space -base file.base binary file` shows what the
// window allocated.

package main

import (
	"fmt"
	"os"
	"runtime/pprof"
	"time"
)

func init() {
	path := os.Getenv("VIDEOCHAT_CPUPROFILE")
	if path == "" {
		return
	}
	at := envDuration("VIDEOCHAT_CPUPROFILE_AT", 20*time.Second)
	dur := envDuration("VIDEOCHAT_CPUPROFILE_FOR", 10*time.Second)
	go func() {
		time.Sleep(at)
		f, err := os.Create(path)
		if err != nil {
			fmt.Fprintln(os.Stderr, "cpuprofile:", err)
			return
		}
		defer f.Close()
		mem := os.Getenv("VIDEOCHAT_MEMPROFILE")
		writeAllocs(mem, ".base")
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "cpuprofile:", err)
			return
		}
		time.Sleep(dur)
		pprof.StopCPUProfile()
		writeAllocs(mem, "")
		fmt.Fprintln(os.Stderr, "cpuprofile: written", path)
	}()
}

// writeAllocs writes the allocation profile to path+suffix (nothing
// without a path).
func writeAllocs(path, suffix string) {
	if path == "" {
		return
	}
	f, err := os.Create(path + suffix)
	if err != nil {
		fmt.Fprintln(os.Stderr, "memprofile:", err)
		return
	}
	defer f.Close()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		fmt.Fprintln(os.Stderr, "memprofile:", err)
	}
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}
