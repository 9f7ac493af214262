package main

import (
	"runtime/debug"
	"testing"
)

// The GC policy: the default applies unless GOGC / GOMEMLIMIT are in the
// environment; a flag (or its VIDEOCHAT_ variable) wins over both.
// Not parallel: it sets the process's collector and restores it.
func TestGCPolicy(t *testing.T) {
	percent := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetGCPercent(percent); debug.SetMemoryLimit(limit) })
	for _, tc := range []struct {
		args        []string
		env         map[string]string
		wantPercent int
		wantLimit   int64 // MiB; 0: none
	}{
		{nil, nil, defaultGCPercent, 0},
		{nil, map[string]string{"GOGC": "80"}, 100, 0}, // the runtime's (here: 100) stays
		{[]string{"-gc-percent", "30"}, map[string]string{"GOGC": "80"}, 30, 0},
		{nil, map[string]string{"VIDEOCHAT_GC_PERCENT": "20", "GOGC": "80"}, 20, 0},
		{[]string{"-memory-limit", "512"}, nil, defaultGCPercent, 512},
		{[]string{"-memory-limit", "512"}, map[string]string{"GOMEMLIMIT": "1GiB"}, defaultGCPercent, 512},
		{[]string{"-gc-percent", "-1", "-memory-limit", "256"}, nil, -1, 256},
	} {
		debug.SetGCPercent(100)
		debug.SetMemoryLimit(1<<63 - 1)
		cfg, err := parseWith(tc.args, tc.env)
		if err != nil {
			t.Fatal(err)
		}
		got := cfg.GC.apply(func(k string) (string, bool) { v, ok := tc.env[k]; return v, ok })
		p := debug.SetGCPercent(100)
		l := debug.SetMemoryLimit(-1)
		wantLimit := tc.wantLimit << 20
		if tc.wantLimit == 0 {
			wantLimit = 1<<63 - 1
		}
		if p != tc.wantPercent || l != wantLimit {
			t.Errorf("%q %v: GOGC %d, limit %d (%s); want %d, %d MiB", tc.args, tc.env, p, l, got, tc.wantPercent, tc.wantLimit)
		}
	}
	if _, err := parseWith([]string{"-memory-limit", "-5"}, nil); err == nil {
		t.Error("a negative -memory-limit was accepted")
	}
}
