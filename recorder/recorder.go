// Package recorder records the calls of the SFU: one WebM file (VP8
// video, Opus audio) per participant per call, written while the call
// runs from copies of the participants' RTP packets.
package recorder

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"videochat/sfu"
)

// Config configures a Recorder.
type Config struct {
	// Dir is the recordings directory, created if missing.
	Dir string
	// OnFinish, if set, is a command and its arguments run (without a
	// shell) after each file is finalised, with the file's absolute path
	// appended as the last argument.
	OnFinish []string
	// OnFinishTimeout bounds each OnFinish run; default 5 minutes. The
	// command is killed after it.
	OnFinishTimeout time.Duration
	Logger          *slog.Logger
	// Now is the clock, for tests; default time.Now.
	Now func() time.Time
	// FinalizeTimeout bounds how long Close and Shutdown wait for open
	// files to be finalised (default 5 s). A file on a disk that does not
	// answer is abandoned after it; the rest of the shutdown goes on.
	FinalizeTimeout time.Duration
}

const (
	defaultOnFinishTimeout = 5 * time.Minute
	// closeGrace is how much longer than OnFinishTimeout Close waits for
	// running OnFinish commands.
	closeGrace = 10 * time.Second
	// defaultFinalizeTimeout bounds how long Shutdown waits for open files
	// to be finalised; a file whose disk does not answer by then is
	// abandoned (its writer may still be blocked, costing only that file).
	defaultFinalizeTimeout = 5 * time.Second
)

// Recorder implements sfu.Recorder.
type Recorder struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	dir  string // absolute
	root *os.Root

	// create makes a new file for a base name; tests replace it.
	create func(base string) (sink, string, error)

	mu        sync.Mutex
	closed    bool
	closeDone chan struct{} // closed when the first Shutdown returns
	closeErr  error         // its result, read after closeDone
	live      map[*session]struct{}
	pending   map[sessionKey]*session // sessions tracks may still join

	counts counters // for Stats

	// OnFinish commands: they run under hookCtx, which Shutdown cancels
	// (killing them) when its context ends; after Shutdown no new one starts.
	hookCtx     context.Context
	hookCancel  context.CancelFunc
	hookMu      sync.Mutex
	hooksClosed bool
	hooks       sync.WaitGroup
}

var _ sfu.Recorder = (*Recorder)(nil)

// New creates the recordings directory if needed and returns a Recorder.
func New(cfg Config) (*Recorder, error) {
	if cfg.Dir == "" {
		return nil, errors.New("recorder: Dir is empty")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("recorder: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("recorder: %w", err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, fmt.Errorf("recorder: %w", err)
	}
	cfg.OnFinish = slices.Clone(cfg.OnFinish)
	if len(cfg.OnFinish) > 0 && cfg.OnFinish[0] == "" {
		_ = root.Close()
		return nil, errors.New("recorder: OnFinish command is empty")
	}
	if cfg.OnFinishTimeout <= 0 {
		cfg.OnFinishTimeout = defaultOnFinishTimeout
	}
	if cfg.FinalizeTimeout <= 0 {
		cfg.FinalizeTimeout = defaultFinalizeTimeout
	}
	r := &Recorder{cfg: cfg, log: cfg.Logger, now: cfg.Now, dir: dir, root: root,
		live: map[*session]struct{}{}, pending: map[sessionKey]*session{},
		closeDone: make(chan struct{})}
	r.hookCtx, r.hookCancel = context.WithCancel(context.Background())
	if r.log == nil {
		r.log = slog.Default()
	}
	if r.now == nil {
		r.now = time.Now
	}
	r.create = func(base string) (sink, string, error) {
		f, name, err := createFile(r.root, base)
		if err != nil {
			return nil, "", err
		}
		return f, name, nil
	}
	return r, nil
}

func (r *Recorder) nowNs() int64 { return r.now().UnixNano() }

// StartTrack implements sfu.Recorder. It records VP8 video and Opus
// audio and returns nil for anything else or after Close. It never waits
// for file I/O.
func (r *Recorder) StartTrack(info sfu.TrackInfo) sfu.TrackWriter {
	if !recordable(info) {
		r.log.Warn("track not recorded: unsupported codec", "call", info.CallID,
			"participant", info.Participant, "codec", info.Codec.MimeType)
		return nil
	}
	now := r.now()
	t := newTrack(info, now.UnixNano())
	key := sessionKey{call: info.CallID, participant: info.Participant}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	if s := r.pending[key]; s != nil && s.tryJoin(t) {
		return t
	}
	// A new file: first track, a second track of the same kind, or one
	// that came after the file was started.
	s := newSession(r, key, now)
	s.tryJoin(t)
	r.pending[key] = s
	r.live[s] = struct{}{}
	return t
}

func recordable(info sfu.TrackInfo) bool {
	switch info.Kind {
	case webrtc.RTPCodecTypeVideo:
		return strings.EqualFold(info.Codec.MimeType, webrtc.MimeTypeVP8)
	case webrtc.RTPCodecTypeAudio:
		return strings.EqualFold(info.Codec.MimeType, webrtc.MimeTypeOpus)
	}
	return false
}

// counters are the recorder's totals since it started.
type counters struct {
	finished, failed, hookFailed atomic.Uint64
}

// Stats are the recorder's numbers.
type Stats struct {
	Active         int    // recordings (files of a participant in a call) under way
	Finished       uint64 // files completed
	Failed         uint64 // recordings stopped by an error (disk full, ...)
	OnFinishFailed uint64 // -record-on-finish runs that failed or timed out
}

// Stats returns the current numbers.
func (r *Recorder) Stats() Stats {
	r.mu.Lock()
	active := len(r.live)
	r.mu.Unlock()
	return Stats{Active: active, Finished: r.counts.finished.Load(), Failed: r.counts.failed.Load(),
		OnFinishFailed: r.counts.hookFailed.Load()}
}

// forget drops a finished session.
func (r *Recorder) forget(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.live, s)
	if r.pending[s.key] == s {
		delete(r.pending, s.key)
	}
}

// Close finalises every open file (waiting at most FinalizeTimeout), waits
// (bounded by OnFinishTimeout plus a grace period) for running OnFinish
// commands and releases the directory. Tracks still writing afterwards
// are ignored. It is idempotent.
func (r *Recorder) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.OnFinishTimeout+closeGrace)
	defer cancel()
	return r.Shutdown(ctx)
}

// Shutdown is Close that waits for running OnFinish commands only until
// ctx is done (a server that must exit quickly), then kills them. Files
// are finalised either way, each within FinalizeTimeout (and ctx): a file
// whose disk hangs is abandoned and reported in the error. Shutdown is
// idempotent: later calls wait for the first (until their ctx is done) and
// return its result. It returns within min(ctx, FinalizeTimeout) plus
// OnFinish's kill delay.
func (r *Recorder) Shutdown(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		select {
		case <-r.closeDone:
			return r.closeErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.closed = true
	sessions := make([]*session, 0, len(r.live))
	for s := range r.live {
		sessions = append(sessions, s)
	}
	r.mu.Unlock()

	err := r.finalize(ctx, sessions)
	// No command starts after this: a session abandoned above that
	// finishes later (its disk came back) runs none.
	r.hookMu.Lock()
	r.hooksClosed = true
	r.hookMu.Unlock()
	if herr := r.waitHooks(ctx); err == nil {
		err = herr
	}
	r.hookCancel()
	if cerr := r.root.Close(); err == nil {
		err = cerr
	}
	r.closeErr = err
	close(r.closeDone)
	return err
}

// finalize finishes every session, each on a goroutine of its own (a
// session's lock is held by a writer blocked on its disk), and waits for
// them until FinalizeTimeout or ctx ends. Sessions still busy then are
// abandoned: their goroutines end when their disk answers.
func (r *Recorder) finalize(ctx context.Context, sessions []*session) error {
	if len(sessions) == 0 {
		return nil
	}
	left := make(chan *session, len(sessions))
	for _, s := range sessions {
		go func() {
			s.mu.Lock()
			s.finish("recorder closed")
			s.mu.Unlock()
			r.forget(s)
			left <- s
		}()
	}
	timer := time.NewTimer(r.cfg.FinalizeTimeout)
	defer timer.Stop()
	pending := len(sessions)
	for pending > 0 {
		select {
		case <-left:
			pending--
		case <-timer.C:
			return r.abandoned(pending)
		case <-ctx.Done():
			return r.abandoned(pending)
		}
	}
	return nil
}

func (r *Recorder) abandoned(n int) error {
	r.log.Error("recordings abandoned at shutdown: their files could not be finalised in time (stuck disk?)",
		"count", n, "timeout", r.cfg.FinalizeTimeout)
	return fmt.Errorf("recorder: %d recording(s) could not be finalised in time", n)
}
