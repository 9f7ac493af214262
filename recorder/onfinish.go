package recorder

import (
	"context"
	"errors"
	"os/exec"
	"slices"
	"sync"
	"time"
)

const (
	maxHookOutput = 4096            // bytes of OnFinish output logged
	hookWaitDelay = 5 * time.Second // after a kill, for pipes to close
)

// runOnFinish starts the OnFinish command for a finalised file. It is
// called with the session's lock held, which Close relies on: every
// session Close has finalised has registered its command before Close
// starts waiting.
func (r *Recorder) runOnFinish(path string) {
	if len(r.cfg.OnFinish) == 0 {
		return
	}
	r.hookMu.Lock()
	defer r.hookMu.Unlock()
	if r.hooksClosed {
		r.log.Warn("on-finish command not run: recorder closed", "file", path)
		return
	}
	r.hooks.Add(1)
	go func() {
		defer r.hooks.Done()
		r.execOnFinish(path)
	}()
}

func (r *Recorder) execOnFinish(path string) {
	ctx, cancel := context.WithTimeout(r.hookCtx, r.cfg.OnFinishTimeout)
	defer cancel()
	args := append(slices.Clone(r.cfg.OnFinish[1:]), path)
	cmd := exec.CommandContext(ctx, r.cfg.OnFinish[0], args...)
	cmd.WaitDelay = hookWaitDelay
	out := &limitedBuffer{max: maxHookOutput}
	cmd.Stdout, cmd.Stderr = out, out // one pipe: exec sees the same writer
	start := time.Now()
	err := cmd.Run()
	attrs := []any{"file", path, "command", r.cfg.OnFinish[0],
		"took", time.Since(start).Round(time.Millisecond), "output", out.String()}
	if err == nil {
		r.log.Info("on-finish command done", append(attrs, "exit_code", 0)...)
		return
	}
	r.counts.hookFailed.Add(1)
	var exitErr *exec.ExitError
	if errors.As(err, &exitErr) {
		attrs = append(attrs, "exit_code", exitErr.ExitCode())
	}
	switch {
	case r.hookCtx.Err() != nil:
		attrs = append(attrs, "killed_at_shutdown", true)
	case ctx.Err() != nil:
		attrs = append(attrs, "timed_out", true)
	}
	r.log.Error("on-finish command failed", append(attrs, "err", err)...)
}

// waitHooks waits for running OnFinish commands until ctx is done; then
// it kills them and waits (at most hookWaitDelay and a little) until they
// are gone, so neither they nor the waiter outlive Shutdown.
func (r *Recorder) waitHooks(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		r.hooks.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	r.hookCancel() // kills every running command
	t := time.NewTimer(hookWaitDelay + time.Second)
	defer t.Stop()
	select {
	case <-done:
		return errors.New("recorder: on-finish commands killed at shutdown")
	case <-t.C:
		// Unreachable unless exec's WaitDelay fails us; the waiter ends
		// with the last command.
		return errors.New("recorder: on-finish commands still running after kill")
	}
}

// limitedBuffer keeps the first max bytes written to it and counts the rest.
type limitedBuffer struct {
	mu      sync.Mutex
	max     int
	buf     []byte
	dropped int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := min(len(p), b.max-len(b.buf))
	b.buf = append(b.buf, p[:n]...)
	b.dropped += len(p) - n
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := string(b.buf)
	if b.dropped > 0 {
		s += "…(truncated)"
	}
	return s
}
