package recorder

import (
	"context"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// hungDisk is a sink whose writes block until release is closed (a disk
// that stopped answering); entered is closed when the first write blocks.
type hungDisk struct {
	sink
	release <-chan struct{}
	entered chan struct{}
	once    sync.Once
}

func (d *hungDisk) Write(b []byte) (int, error) {
	d.once.Do(func() { close(d.entered) })
	<-d.release
	return d.sink.Write(b)
}

func (d *hungDisk) WriteAt(b []byte, off int64) (int, error) {
	<-d.release
	return d.sink.WriteAt(b, off)
}

// A file whose disk hangs forever (its writer blocked inside WriteRTP,
// holding the session) costs only that file: Shutdown returns within
// FinalizeTimeout with an error, finalises the other files, is idempotent,
// and the blocked goroutines end once the disk answers again.
func TestShutdownWithHungDiskIsBounded(t *testing.T) {
	r, clk, logs := newTestRecorder(t, Config{FinalizeTimeout: 300 * time.Millisecond,
		OnFinish: []string{"/bin/true"}})
	release := make(chan struct{})
	entered := make(chan struct{})
	create := r.create
	r.create = func(base string) (sink, string, error) {
		f, name, err := create(base)
		if err != nil || !strings.Contains(base, "alice") {
			return f, name, err
		}
		return &hungDisk{sink: f, release: release, entered: entered}, name, nil
	}

	// bob records normally, and his track is still open at shutdown.
	b := r.StartTrack(audioInfo("call", "bob", 2))
	for i := range 150 { // 3 s: past the header hold
		clk.Advance(20 * time.Millisecond)
		if err := b.WriteRTP(marshal(t, opusPacket(i, 2))); err != nil {
			t.Fatal(err)
		}
	}
	// alice's writer blocks for good once her file's header is written.
	a := r.StartTrack(audioInfo("call", "alice", 1))
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for i := 0; ; i++ {
			clk.Advance(20 * time.Millisecond)
			if err := a.WriteRTP(marshal(t, opusPacket(i, 1))); err != nil {
				return
			}
			select {
			case <-release:
				return
			default:
			}
		}
	}()
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("alice's file was never written")
	}

	start := time.Now()
	err := r.Shutdown(context.Background())
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "1 recording(s) could not be finalised") {
		t.Fatalf("Shutdown = %v, want the abandoned recording reported", err)
	}
	if took > 300*time.Millisecond+time.Second {
		t.Fatalf("Shutdown took %v with a hung disk, FinalizeTimeout 300ms", took)
	}
	t.Logf("Shutdown with a hung disk returned in %v", took.Round(time.Millisecond))
	again := time.Now()
	if err2 := r.Close(); err2 == nil || err2.Error() != err.Error() || time.Since(again) > 100*time.Millisecond {
		t.Fatalf("second Close = %v after %v, want the first result at once", err2, time.Since(again))
	}
	if files := webmFiles(t, r.dir); len(files) != 2 {
		t.Fatalf("files %v, want bob's (finalised) and alice's (abandoned)", files)
	}
	if out := logs.String(); !regexp.MustCompile(`recording finished.*participant=bob`).MatchString(out) {
		t.Errorf("bob's file not finalised:\n%s", out)
	}

	// The disk answers again: the writer and the abandoned finaliser end,
	// and no on-finish command starts after Shutdown.
	close(release)
	select {
	case <-writerDone:
	case <-time.After(5 * time.Second):
		t.Fatal("writer still blocked after release")
	}
	waitFor(t, "the abandoned session to be forgotten", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.live) == 0
	})
	if out := logs.String(); !strings.Contains(out, "on-finish command not run: recorder closed") {
		t.Errorf("late on-finish not refused:\n%s", out)
	}
}

// When Shutdown's context ends, running OnFinish commands are killed and
// Shutdown returns (it does not leave the waiter or the command behind).
func TestShutdownKillsOnFinishWhenContextEnds(t *testing.T) {
	r, clk, logs := newTestRecorder(t, Config{OnFinish: []string{"/bin/sh", "-c", "exec sleep 60"},
		OnFinishTimeout: time.Minute})
	recordShort(t, r, clk, "eve")
	waitFor(t, "the command to start", func() bool { return strings.Contains(logs.String(), "recording finished") })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := r.Shutdown(ctx)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("Shutdown = %v, want the killed commands reported", err)
	}
	if took > 300*time.Millisecond+hookWaitDelay {
		t.Fatalf("Shutdown took %v", took)
	}
	if out := logs.String(); !strings.Contains(out, "killed_at_shutdown=true") {
		t.Errorf("kill not logged:\n%s", out)
	}
	t.Logf("Shutdown with a 60 s on-finish command returned in %v", took.Round(time.Millisecond))
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
