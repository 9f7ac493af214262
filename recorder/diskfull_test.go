package recorder

import (
	"errors"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"videochat/sfu"
)

// fullDisk wraps a file and fails with ENOSPC once limit bytes are written.
type fullDisk struct {
	sink
	mu      sync.Mutex
	limit   int64
	written int64
	closed  bool
}

func (d *fullDisk) Write(b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.written+int64(len(b)) > d.limit {
		n := int(d.limit - d.written)
		n, _ = d.sink.Write(b[:n])
		d.written += int64(n)
		return n, syscall.ENOSPC
	}
	n, err := d.sink.Write(b)
	d.written += int64(n)
	return n, err
}

func (d *fullDisk) WriteAt(b []byte, off int64) (int, error) {
	if off+int64(len(b)) > d.limit {
		return 0, syscall.ENOSPC
	}
	return d.sink.WriteAt(b, off)
}

func (d *fullDisk) Close() error {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	return d.sink.Close()
}

// TestDiskFull: alice's file hits ENOSPC; her recording stops with a
// logged error, her writers return at once from then on, and bob's
// recording in the same call is not affected.
func TestDiskFull(t *testing.T) {
	r, clk, logs := newTestRecorder(t, Config{})
	create := r.create
	var disks []*fullDisk
	r.create = func(base string) (sink, string, error) {
		f, name, err := create(base)
		if err != nil || !strings.Contains(base, "alice") {
			return f, name, err
		}
		d := &fullDisk{sink: f, limit: 20000}
		disks = append(disks, d)
		return d, name, nil
	}
	var writers [2][2]sfu.TrackWriter // [participant][audio, video]
	for i, name := range []string{"alice", "bob"} {
		writers[i][0] = r.StartTrack(audioInfo("call", name, 1))
		writers[i][1] = r.StartTrack(videoInfo("call", name, 2, nil))
	}
	frames := videoPackets(150, 30, 700, 400, 5000, 2)
	var aliceErr error
	for ms := 0; ms < 5000; ms++ {
		clk.Advance(time.Millisecond)
		for i := range writers {
			var errs []error
			if ms%20 == 0 {
				errs = append(errs, writers[i][0].WriteRTP(marshal(t, opusPacket(ms/20, 1))))
			}
			if ms%33 == 0 && ms/33 < len(frames) {
				for _, p := range frames[ms/33] {
					errs = append(errs, writers[i][1].WriteRTP(marshal(t, p)))
				}
			}
			for _, err := range errs {
				if err != nil && i == 1 {
					t.Fatalf("bob: %v", err)
				}
				if err != nil && aliceErr == nil {
					aliceErr = err
				}
			}
		}
	}
	if !errors.Is(aliceErr, syscall.ENOSPC) {
		t.Fatalf("alice's WriteRTP returned %v, want ENOSPC", aliceErr)
	}
	if len(disks) != 1 || !disks[0].closed {
		t.Fatalf("alice's file was not released")
	}
	// From now on alice's writers answer at once.
	pkt := marshal(t, frames[10][0])
	start := time.Now()
	for i := 0; i < 10000; i++ {
		if err := writers[0][1].WriteRTP(pkt); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("WriteRTP after failure: %v", err)
		}
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Errorf("10000 WriteRTP calls after failure took %v", d)
	}
	if st := r.Stats(); st.Active != 1 || st.Failed != 1 || st.Finished != 0 {
		t.Errorf("stats while recording: %+v, want 1 active (bob's), 1 failed (alice's)", st)
	}
	for i := range writers {
		for _, w := range writers[i] {
			if err := w.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		}
	}
	// The metrics' numbers: alice's recording failed, bob's finished.
	deadline := time.Now().Add(5 * time.Second)
	for st := r.Stats(); st.Active != 0 || st.Failed != 1 || st.Finished != 1; st = r.Stats() {
		if time.Now().After(deadline) {
			t.Fatalf("stats after close: %+v, want 0 active, 1 failed, 1 finished", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
	out := logs.String()
	if !strings.Contains(out, "recording failed") || !strings.Contains(out, "no space left on device") ||
		strings.Count(out, "recording failed") != 1 {
		t.Errorf("want one logged failure with ENOSPC; log:\n%s", out)
	}
	var bob *parsedWebm
	for _, f := range webmFiles(t, r.dir) {
		if strings.Contains(f, "bob") {
			bob = parseWebmFile(t, r.dir+"/"+f)
		}
	}
	if bob == nil {
		t.Fatal("no file for bob")
	}
	checkStructure(t, bob)
	if len(bob.blocks) != 250+150 {
		t.Errorf("bob's file has %d frames, want 400", len(bob.blocks))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
}
