package recorder

import (
	"errors"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// recordShort records a second of audio for name and ends the track.
func recordShort(t *testing.T, r *Recorder, clk *fakeClock, name string) {
	t.Helper()
	a := r.StartTrack(audioInfo("call", name, 1))
	for i := 0; i < 50; i++ {
		clk.Advance(20 * time.Millisecond)
		if err := a.WriteRTP(marshal(t, opusPacket(i, 1))); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOnFinishGetsPathAndStatusIsLogged(t *testing.T) {
	r, clk, logs := newTestRecorder(t, Config{OnFinish: []string{"/bin/sh", "-c",
		`test -s "$0" || exit 9; printf 'got %s' "$0"; echo oops >&2; exit 3`}})
	recordShort(t, r, clk, "ann")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	files := webmFiles(t, r.dir)
	if len(files) != 1 {
		t.Fatalf("files %v", files)
	}
	out := logs.String()
	path := filepath.Join(r.dir, files[0])
	for _, want := range []string{"on-finish command failed", "got " + path, "oops", "exit_code=3"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestOnFinishSuccessAndTruncatedOutput(t *testing.T) {
	r, clk, logs := newTestRecorder(t, Config{OnFinish: []string{"/bin/sh", "-c", `head -c 100000 /dev/zero | tr '\0' x`}})
	recordShort(t, r, clk, "ben")
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	out := logs.String()
	if !strings.Contains(out, "on-finish command done") || !strings.Contains(out, "exit_code=0") {
		t.Fatalf("no success logged:\n%.2000s", out)
	}
	m := regexp.MustCompile(`output="?(x*)…\(truncated\)`).FindStringSubmatch(out)
	if m == nil || len(m[1]) != maxHookOutput {
		t.Errorf("output not truncated to %d bytes:\n%s", maxHookOutput, out[strings.Index(out, "on-finish"):][:200])
	}
}

func TestOnFinishKilledAfterTimeout(t *testing.T) {
	r, clk, logs := newTestRecorder(t, Config{OnFinish: []string{"/bin/sh", "-c", "exec sleep 30"},
		OnFinishTimeout: 300 * time.Millisecond})
	recordShort(t, r, clk, "cat")
	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Close took %v with a command killed after 300 ms", d)
	}
	if out := logs.String(); !strings.Contains(out, "timed_out=true") {
		t.Errorf("timeout not logged:\n%s", out)
	}
}

func TestCreateFailureStopsRecording(t *testing.T) {
	r, clk, logs := newTestRecorder(t, Config{OnFinish: []string{"/bin/false"}})
	r.create = func(string) (sink, string, error) { return nil, "", syscall.ENOSPC }
	a := r.StartTrack(audioInfo("call", "dan", 1))
	var err error
	for i := 0; i < 200 && err == nil; i++ {
		clk.Advance(20 * time.Millisecond)
		err = a.WriteRTP(marshal(t, opusPacket(i, 1)))
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("WriteRTP: %v, want ENOSPC", err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if out := logs.String(); !strings.Contains(out, "recording failed") || strings.Contains(out, "on-finish") {
		t.Errorf("want a logged failure and no on-finish run:\n%s", out)
	}
}
