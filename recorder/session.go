package recorder

import (
	"fmt"
	"path/filepath"
	"sync"
	"time"
)

const (
	// headerHold is how long the first track's frames are held, waiting
	// for the participant's other track, before a one-track file starts.
	headerHold = int64(2 * time.Second)
	// reportHold extends it while a track with frames has had no sender
	// report yet, so the file starts with audio and video in sync
	// (Chromium's first audio report comes after about 2.5 s).
	reportHold = int64(3 * time.Second)
	// keyframeHold extends it while a video track has no keyframe yet.
	keyframeHold = int64(5 * time.Second)
	// interleaveWindow is how far (media time) one track may run ahead
	// of an open track that has nothing queued before it is written
	// without waiting for the other.
	interleaveWindow = int64(time.Second)
)

type sessionKey struct{ call, participant string }

// session is the recording of one participant in one call: one file
// with up to one video and one audio track.
type session struct {
	r     *Recorder
	key   sessionKey
	start time.Time

	// jmu guards membership only, so that StartTrack never waits for
	// file I/O done under mu.
	jmu     sync.Mutex
	sealed  bool // no more tracks may join
	video   bool // a video track joined
	audio   bool // an audio track joined
	joining []*track

	mu     sync.Mutex
	tracks []*track // video first
	sender senderClock
	header bool
	done   bool
	err    error
	file   sink
	name   string
	path   string
	mux    *webmWriter
	origin int64 // wall time of file time 0
	newest int64 // newest wall time queued
	width  int   // of the first video keyframe
	height int
}

func newSession(r *Recorder, key sessionKey, start time.Time) *session {
	return &session{r: r, key: key, start: start}
}

// tryJoin adds t unless the file was started or has a track of its kind.
func (s *session) tryJoin(t *track) bool {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if s.sealed || (t.video && s.video) || (!t.video && s.audio) {
		return false
	}
	if t.video {
		s.video = true
	} else {
		s.audio = true
	}
	t.s = s
	s.joining = append(s.joining, t)
	return true
}

// adopt moves joined tracks into tracks; seal forbids further joins.
func (s *session) adopt(seal bool) {
	s.jmu.Lock()
	defer s.jmu.Unlock()
	s.sealed = s.sealed || seal
	for _, t := range s.joining {
		if t.video {
			s.tracks = append([]*track{t}, s.tracks...)
		} else {
			s.tracks = append(s.tracks, t)
		}
	}
	s.joining = nil
}

func (s *session) writeRTP(t *track, raw []byte) error {
	if s.err != nil {
		return s.err
	}
	if s.done || t.closed {
		return nil
	}
	s.adopt(false)
	p, ok := t.jb.parse(raw)
	if !ok || !t.accept(p.SSRC, p.PayloadType) {
		t.ignored++
		return nil
	}
	now := s.r.nowNs()
	t.now = now
	t.jb.push(p, now, t.emitFn)
	s.pump(now)
	return s.err
}

func (s *session) closeTrack(t *track) {
	if t.closed {
		return
	}
	t.closed = true
	if s.done {
		return
	}
	s.adopt(false)
	t.finishing = true
	t.jb.flush(t.emitFn)
	for _, o := range s.tracks {
		if !o.closed {
			s.pump(s.r.nowNs())
			return
		}
	}
	s.finish("tracks ended")
}

// pump starts the file when it is time and writes what can be written.
func (s *session) pump(now int64) {
	if s.done {
		return
	}
	if !s.header {
		if !s.readyForHeader(now) {
			return
		}
		if err := s.openFile(); err != nil {
			s.fail(err)
			return
		}
	}
	s.writeQueued(false)
}

// readyForHeader: every track has frames, or the hold time is over.
func (s *session) readyForHeader(now int64) bool {
	s.adopt(false)
	any, all, videoWaits, reportWaits := false, true, false, false
	for _, t := range s.tracks {
		if len(t.queue) > 0 {
			any = true
			reportWaits = reportWaits || !t.clock.fromSR
		} else {
			all = false
			videoWaits = videoWaits || t.video
		}
	}
	if !any {
		return false
	}
	age := now - s.start.UnixNano()
	if reportWaits && age < reportHold {
		return false
	}
	if all && len(s.tracks) == 2 {
		return true
	}
	return age >= headerHold && (!videoWaits || age >= keyframeHold)
}

// openFile creates the file and writes its header.
func (s *session) openFile() error {
	s.adopt(true)
	base := baseName(s.start, s.key.call, s.key.participant)
	f, name, err := s.r.create(base)
	if err != nil {
		return fmt.Errorf("create %s: %w", base, err)
	}
	s.file, s.name, s.path = f, name, filepath.Join(s.r.dir, name)
	s.header = true
	var tracks []webmTrack
	haveOrigin := false
	for i, t := range s.tracks {
		t.number = uint64(i + 1)
		tracks = append(tracks, webmTrack{number: t.number, video: t.video, width: s.width, height: s.height})
		if len(t.queue) > 0 && (!haveOrigin || t.queue[0].wall < s.origin) {
			s.origin, haveOrigin = t.queue[0].wall, true
		}
	}
	s.mux = newWebmWriter(f)
	if err := s.mux.writeHeader(tracks, time.Unix(0, s.origin).UTC()); err != nil {
		return err
	}
	s.r.log.Info("recording started", "call", s.key.call, "participant", s.key.participant,
		"file", s.path, "tracks", len(tracks))
	return nil
}

// videoSize notes the size of a video keyframe; the file's placeholder
// is patched if the header went out before the first keyframe.
func (s *session) videoSize(w, h int) {
	if s.width == 0 && w > 0 && h > 0 {
		s.width, s.height = w, h
		if s.header && s.mux != nil {
			if err := s.mux.setVideoSize(w, h); err != nil {
				s.fail(err)
			}
		}
	}
}

// writeQueued writes queued frames in time order. Unless flushing, it
// stops when an open track has nothing queued and might still deliver
// earlier frames, bounded by interleaveWindow.
func (s *session) writeQueued(flush bool) {
	for !s.done {
		t := s.nextTrack(flush)
		if t == nil {
			return
		}
		f := t.pop()
		ms, err := s.mux.writeFrame(t.number, t.fileTime(f.wall, s.origin), f.key, f.data)
		if err != nil {
			s.fail(err)
			return
		}
		t.wrote(ms)
	}
}

func (s *session) nextTrack(flush bool) *track {
	var best *track
	for _, t := range s.tracks {
		if len(t.queue) > 0 && (best == nil || t.queue[0].wall < best.queue[0].wall) {
			best = t
		}
	}
	if best == nil || flush {
		return best
	}
	for _, t := range s.tracks {
		if len(t.queue) == 0 && !t.closed && s.newest-best.queue[0].wall < interleaveWindow {
			return nil
		}
	}
	return best
}

// finish finalises the file; reason is logged.
func (s *session) finish(reason string) {
	if s.done {
		return
	}
	s.adopt(true)
	for _, t := range s.tracks {
		t.finishing = true
		t.jb.flush(t.emitFn)
	}
	if !s.header {
		if !s.anyQueued() {
			s.done = true
			s.r.log.Info("nothing recorded", "call", s.key.call, "participant", s.key.participant, "reason", reason)
			return
		}
		if err := s.openFile(); err != nil {
			s.fail(err)
			return
		}
	}
	s.writeQueued(true)
	if s.done {
		return // failed
	}
	if err := s.closeFile(); err != nil {
		s.fail(err)
		return
	}
	s.done = true
	s.r.counts.finished.Add(1)
	s.logFinished(reason)
	s.r.runOnFinish(s.path)
}

func (s *session) anyQueued() bool {
	for _, t := range s.tracks {
		if len(t.queue) > 0 {
			return true
		}
	}
	return false
}

func (s *session) closeFile() error {
	var end int64
	for _, t := range s.tracks {
		if t.lastMs >= 0 && t.lastMs+t.lastDur > end {
			end = t.lastMs + t.lastDur
		}
	}
	err := s.mux.finish(float64(end))
	if err == nil {
		err = s.file.Sync()
	}
	if cerr := s.file.Close(); err == nil {
		err = cerr
	}
	s.file = nil
	return err
}

func (s *session) logFinished(reason string) {
	attrs := []any{"call", s.key.call, "participant", s.key.participant, "file", s.path,
		"reason", reason, "bytes", s.mux.off}
	for _, t := range s.tracks {
		kind := "audio"
		if t.video {
			kind = "video"
		}
		st := t.jb.stats
		attrs = append(attrs, kind+"_frames", t.written, kind+"_lost_packets", st.lost,
			kind+"_late_or_duplicate", st.late+st.duplicates)
		if t.video {
			attrs = append(attrs, "video_frames_dropped", t.vp8.dropped)
		}
	}
	s.r.log.Info("recording finished", attrs...)
}

// fail stops the recording after an error: the file is released (kept
// as far as it got) and later writes return the error at once.
func (s *session) fail(err error) {
	if s.err != nil {
		return
	}
	s.err = fmt.Errorf("recording of %q in call %q stopped: %w", s.key.participant, s.key.call, err)
	s.done = true
	s.r.counts.failed.Add(1)
	if s.file != nil {
		_ = s.file.Close()
		s.file = nil
	}
	for _, t := range s.tracks {
		t.queue = nil
	}
	s.r.log.Error("recording failed", "call", s.key.call, "participant", s.key.participant,
		"file", s.path, "err", err)
}
