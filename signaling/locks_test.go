package signaling

import (
	"sync/atomic"
	"testing"
	"time"
)

// reentrantMedia is the fake SFU, except that creating a call first calls
// back into the server (Stats takes s.mu): if the server called out to
// the SFU with s.mu held, that callback could not finish.
type reentrantMedia struct {
	*fakeMedia
	srv       atomic.Pointer[Server]
	underLock atomic.Bool
}

func (m *reentrantMedia) NewCall(id string) MediaCall {
	done := make(chan struct{})
	go func() { m.srv.Load().Stats(); close(done) }()
	t := time.NewTimer(2 * time.Second) // Stats takes microseconds; 2 s is a lock held
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		m.underLock.Store(true) // the goroutine ends once the lock is released
	}
	return m.fakeMedia.NewCall(id)
}

// TestMediaNotCalledUnderLock: the server creates a call's media (a call
// into the SFU) without holding its lock, and the call works.
func TestMediaNotCalledUnderLock(t *testing.T) {
	var media *reentrantMedia
	e := newEnv(t, func(cfg *Config) {
		media = &reentrantMedia{fakeMedia: cfg.Media.(*fakeMedia)}
		cfg.Media = media
	})
	media.srv.Store(e.srv)
	a, b := e.login("alice"), e.login("bob")
	e.connect(a, b, "alice", "bob")
	if media.underLock.Load() {
		t.Fatal("Media.NewCall was called with the server's lock held")
	}
	b.send(`{"type":"leave","name":"alice"}`)
	a.expect(typeLeave)
	waitFor(t, func() bool { return e.media.peer("alice").isClosed() && e.media.peer("bob").isClosed() })
}
