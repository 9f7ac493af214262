package sfu

import (
	"fmt"
	"sync"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"

	"videochat/internal/gcc"
)

// directPacer sends every packet at once, like gcc.NoOpPacer, but without
// holding a lock across the write: NoOpPacer keeps one mutex per
// PeerConnection locked through the whole rest of the write path, sendto
// included, so a subscriber's audio and video (and retransmissions)
// queue behind each other's system calls. The writers below it are safe
// for concurrent use (SRTP locks only around encryption).
type directPacer struct {
	mu      sync.RWMutex
	writers map[uint32]interceptor.RTPWriter
}

var _ gcc.Pacer = (*directPacer)(nil)

func newDirectPacer() *directPacer {
	return &directPacer{writers: map[uint32]interceptor.RTPWriter{}}
}

func (p *directPacer) AddStream(ssrc uint32, w interceptor.RTPWriter) {
	p.mu.Lock()
	p.writers[ssrc] = w
	p.mu.Unlock()
}

func (p *directPacer) Write(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
	p.mu.RLock()
	w := p.writers[h.SSRC]
	p.mu.RUnlock()
	if w == nil {
		return 0, fmt.Errorf("%w: %v", gcc.ErrUnknownStream, h.SSRC)
	}
	return w.Write(h, payload, a)
}

func (p *directPacer) SetTargetBitrate(int) {}

func (p *directPacer) Close() error { return nil }
