package recorder

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"

	"videochat/sfu"
)

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 21, 15, 4, 5, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logBuffer collects log output, safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func newTestLogger() (*slog.Logger, *logBuffer) {
	lb := &logBuffer{}
	return slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})), lb
}

func newTestRecorder(t *testing.T, cfg Config) (*Recorder, *fakeClock, *logBuffer) {
	t.Helper()
	clk := newFakeClock()
	log, lb := newTestLogger()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	if cfg.Now == nil {
		cfg.Now = clk.Now
	}
	cfg.Logger = log
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r, clk, lb
}

const (
	vp8PT  = 96
	opusPT = 111
)

func videoInfo(call, name string, ssrc uint32, keyReqs *atomic.Int64) sfu.TrackInfo {
	return sfu.TrackInfo{CallID: call, Participant: name, Kind: webrtc.RTPCodecTypeVideo, SSRC: ssrc,
		Codec: webrtc.RTPCodecParameters{PayloadType: vp8PT,
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}},
		RequestKeyframe: func() {
			if keyReqs != nil {
				keyReqs.Add(1)
			}
		}}
}

func audioInfo(call, name string, ssrc uint32) sfu.TrackInfo {
	return sfu.TrackInfo{CallID: call, Participant: name, Kind: webrtc.RTPCodecTypeAudio, SSRC: ssrc,
		Codec: webrtc.RTPCodecParameters{PayloadType: opusPT,
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}},
		RequestKeyframe: func() {}}
}

// synthFrame is a fake VP8 frame: a keyframe header with a size, or an
// interframe tag; bytes 10..13 carry the frame index to identify it.
func synthFrame(i int, key bool, size int) []byte {
	b := make([]byte, max(size, 16))
	if key {
		copy(b, []byte{0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x40, 0x01, 0xf0, 0x00}) // 320x240
	} else {
		b[0] = 0x11
	}
	binary.BigEndian.PutUint32(b[10:], uint32(i))
	for j := 14; j < len(b); j++ {
		b[j] = byte(i + j)
	}
	return b
}

func synthIndex(b []byte) int {
	if len(b) < 14 {
		return -1
	}
	return int(binary.BigEndian.Uint32(b[10:]))
}

// videoPackets packetises n synthetic frames (30 fps, a keyframe every
// gop frames) into RTP packets of at most mtu bytes.
func videoPackets(n, gop, size int, mtu uint16, seq uint16, ssrc uint32) [][]*rtp.Packet {
	pz := rtp.NewPacketizer(mtu, vp8PT, ssrc, &codecs.VP8Payloader{EnablePictureID: true},
		rtp.NewFixedSequencer(seq), 90000)
	frames := make([][]*rtp.Packet, n)
	for i := range frames {
		frames[i] = pz.Packetize(synthFrame(i, i%gop == 0, size), 3000)
	}
	return frames
}

func marshal(t *testing.T, p *rtp.Packet) []byte {
	t.Helper()
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// listDir returns the names of the files in dir.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func webmFiles(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	for _, n := range listDir(t, dir) {
		if strings.HasSuffix(n, ".webm") {
			out = append(out, n)
		}
	}
	return out
}
