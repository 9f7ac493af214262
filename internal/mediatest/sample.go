// Package mediatest makes real media for tests: a VP8 + Opus sample
// encoded by ffmpeg from its test sources, and a player that sends it as
// RTP in real time.
package mediatest

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"
)

// Hint says what the media tests need.
const Hint = "ffmpeg and ffprobe are needed for this test (apt-get install ffmpeg, or run `make test` as root)"

// FFmpeg returns the paths of ffmpeg and ffprobe; it fails the test (never
// skips) when they are missing.
func FFmpeg(t testing.TB) (ffmpeg, ffprobe string) {
	t.Helper()
	var err1, err2 error
	ffmpeg, err1 = exec.LookPath("ffmpeg")
	ffprobe, err2 = exec.LookPath("ffprobe")
	if err1 != nil || err2 != nil {
		t.Fatalf("%s: %v %v", Hint, err1, err2)
	}
	return ffmpeg, ffprobe
}

// Run runs a command and returns its combined output, failing the test
// on error.
func Run(t testing.TB, name string, args ...string) []byte {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return out
}

// Sample is seconds of 320x240 VP8 video at 30 fps (a keyframe every
// second) and a 440 Hz tone as Opus, one 20 ms packet per entry.
type Sample struct {
	Seconds int
	Video   [][]byte // VP8 frames
	Audio   [][]byte // Opus packets
}

// Generate encodes a sample with ffmpeg's test sources.
func Generate(t testing.TB, seconds int) Sample {
	t.Helper()
	ffmpeg, _ := FFmpeg(t)
	dir := t.TempDir()
	ivf, ogg := filepath.Join(dir, "v.ivf"), filepath.Join(dir, "a.ogg")
	secs := strconv.Itoa(seconds)
	Run(t, ffmpeg, "-v", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=30", "-t", secs,
		"-c:v", "libvpx", "-b:v", "500k", "-g", "30", "-auto-alt-ref", "0", "-lag-in-frames", "0", ivf)
	Run(t, ffmpeg, "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", secs,
		"-c:a", "libopus", "-frame_duration", "20", "-page_duration", "20000", ogg)
	s := Sample{Seconds: seconds, Video: readIVF(t, ivf), Audio: readOgg(t, ogg)}
	if len(s.Video) != 30*seconds || len(s.Audio) < 50*seconds-2 {
		t.Fatalf("sample has %d video frames and %d audio packets", len(s.Video), len(s.Audio))
	}
	return s
}

func readIVF(t testing.TB, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, hdr, err := ivfreader.NewWith(f)
	if err != nil || hdr.Width != 320 {
		t.Fatalf("ivf: %v %+v", err, hdr)
	}
	var frames [][]byte
	for {
		frame, _, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			return frames
		}
		if err != nil {
			t.Fatal(err)
		}
		frames = append(frames, frame)
	}
}

// readOgg returns the Opus packets of an Ogg file written with
// -page_duration 20000, which puts one 20 ms packet on each page.
func readOgg(t testing.TB, path string) [][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, _, err := oggreader.NewWith(f)
	if err != nil {
		t.Fatal(err)
	}
	var packets [][]byte
	var lastGranule, lastSpan uint64
	for {
		page, ph, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			return packets
		}
		if err != nil {
			t.Fatal(err)
		}
		if _, isHeader := ph.HeaderType(page); isHeader {
			continue
		}
		// Only the last page may be shorter (end trimming).
		if lastSpan != 0 && lastSpan != 960 {
			t.Fatalf("Ogg page %d spans %d samples, want one 960-sample packet", len(packets)-1, lastSpan)
		}
		if lastGranule != 0 {
			lastSpan = ph.GranulePosition - lastGranule
		}
		lastGranule = ph.GranulePosition
		packets = append(packets, page)
	}
}
