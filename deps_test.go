package main

import (
	"context"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dependencyFloors are the lowest versions the build may select: older
// ones have known vulnerabilities (pion/dtls/v3 < 3.1.4, pion/stun/v3 <
// 3.1.5 (GHSA-34rh-wp3j-6cxc, a remote panic; pion/turn/v4 asks only for
// v3.0.1), pion/interceptor < 0.1.39), and x/net and x/crypto are kept at
// the newest the module proxy served when this was written.
var dependencyFloors = map[string]string{
	"github.com/pion/dtls/v3":     "v3.1.4",
	"github.com/pion/stun/v3":     "v3.1.5",
	"github.com/pion/interceptor": "v0.1.39",
	"golang.org/x/net":            "v0.63.0",
	"golang.org/x/crypto":         "v0.59.0",
}

// TestDependencyFloors checks the versions `go list -m all` selects.
func TestDependencyFloors(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, goCmd, "list", "-m", "all").Output()
	if err != nil {
		t.Fatalf("go list -m all: %v", err)
	}
	selected := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			selected[f[0]] = f[1]
		}
	}
	for mod, floor := range dependencyFloors {
		v, ok := selected[mod]
		switch {
		case !ok:
			t.Errorf("%s is not in the build list (floor %s)", mod, floor)
		case compareVersions(v, floor) < 0:
			t.Errorf("%s %s is below the floor %s", mod, v, floor)
		default:
			t.Logf("%s %s (floor %s)", mod, v, floor)
		}
	}
}

// compareVersions compares the release parts of two semantic versions
// ("v1.2.3", a pre-release or build suffix sorts as its release; a
// pseudo-version counts as the release it precedes, which is conservative
// enough for floors on tagged releases). It returns -1, 0 or 1.
func compareVersions(a, b string) int {
	pa, pb := versionParts(a), versionParts(b)
	for i := range pa {
		if pa[i] != pb[i] {
			if pa[i] < pb[i] {
				return -1
			}
			return 1
		}
	}
	return 0
}

func versionParts(v string) [3]int {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	var p [3]int
	for i, s := range strings.SplitN(v, ".", 3) {
		p[i], _ = strconv.Atoi(s)
	}
	return p
}

func TestCompareVersions(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"v3.1.8", "v3.1.4", 1}, {"v3.1.4", "v3.1.4", 0}, {"v3.0.1", "v3.1.5", -1},
		{"v0.1.49", "v0.1.39", 1}, {"v0.1.9", "v0.1.39", -1}, {"v0.63.0", "v0.59.0", 1},
		{"v1.10.0", "v1.9.9", 1}, {"v0.0.0-20210201002637-9d1b0723b659", "v0.0.1", -1},
	} {
		if got := compareVersions(tc.a, tc.b); got != tc.want {
			t.Errorf("compareVersions(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
