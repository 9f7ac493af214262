//go:build cpuprofile

// A CPU profile of the running server for measurements (not in the normal
// build): `go build -tags cpuprofile`, then VIDEOCHAT_CPUPROFILE=file
// profiles from VIDEOCHAT_CPUPROFILE_AT (default 20s) after start for
// VIDEOCHAT_CPUPROFILE_FOR (default 10s), e.g. a loadtest step's window.
// With VIDEOCHAT_MEMPROFILE=file it also writes the allocation profile at
// the start (file.base) and end (file) of that window: `go tool pprof
// -sample_index=alloc_space -base file.base binary file` shows what the
// window allocated. With VIDEOCHAT_GOROUTINES=file it writes, at the end
// of the window, the goroutines grouped by stack (file) and the live heap
// after a GC (file.heap: `go tool pprof -sample_index=inuse_space`).

package main

import (
	"fmt"
	"os"
	"runtime"
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
		writeGoroutines(os.Getenv("VIDEOCHAT_GOROUTINES"))
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

// writeGoroutines writes the goroutine dump (debug=1) to path and the
// live heap to path.heap (nothing without a path).
func writeGoroutines(path string) {
	if path == "" {
		return
	}
	for _, p := range []struct{ name, suffix string }{{"goroutine", ""}, {"heap", ".heap"}} {
		f, err := os.Create(path + p.suffix)
		if err != nil {
			fmt.Fprintln(os.Stderr, "goroutines:", err)
			return
		}
		if p.name == "heap" {
			runtime.GC()
		}
		debug := 1
		if p.name == "heap" {
			debug = 0
		}
		if err := pprof.Lookup(p.name).WriteTo(f, debug); err != nil {
			fmt.Fprintln(os.Stderr, "goroutines:", err)
		}
		_ = f.Close()
	}
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil && d > 0 {
		return d
	}
	return def
}
