package recorder

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"videochat/internal/mediatest"
	"videochat/sfu"
)

const (
	sampleSeconds = 5
	timeSpeedup   = 4 // the fake clock runs this much faster than the real one
)

// sample is the media of a generated VP8 + Opus sample.
type sample struct {
	video [][]byte // VP8 frames, 30 fps
	audio [][]byte // Opus packets, 20 ms each
}

func requireFFmpeg(t *testing.T) (ffmpeg, ffprobe string) { return mediatest.FFmpeg(t) }

func makeSample(t *testing.T, _ string) sample {
	s := mediatest.Generate(t, sampleSeconds)
	return sample{video: s.Video, audio: s.Audio}
}

func run(t *testing.T, name string, args ...string) []byte {
	t.Helper()
	return mediatest.Run(t, name, args...)
}

// sendEvent is one packet or sender report at capture time + delay.
type sendEvent struct {
	at  time.Duration
	pkt []byte
	sr  bool
	ntp uint64
	ts  uint32
}

// streamEvents packetises the sample's two tracks. Audio starts 200 ms
// after video (its track starts later); each track sends a sender report
// first and then every second, from a sender clock 1 h off the server's.
func streamEvents(t *testing.T, s sample, senderBase time.Time) (video, audio []sendEvent) {
	t.Helper()
	vp := rtp.NewPacketizer(1200, vp8PT, 2, &codecs.VP8Payloader{EnablePictureID: true}, rtp.NewFixedSequencer(65000), 90000)
	for k, frame := range s.video {
		capture := time.Duration(k) * time.Second / 30
		ts := uint32(1e6 + k*3000)
		if k%30 == 0 {
			video = append(video, sendEvent{at: capture + 40*time.Millisecond, sr: true, ntp: toNTP(senderBase.Add(capture)), ts: ts})
		}
		for i, p := range vp.Packetize(frame, 3000) {
			p.Timestamp = ts
			video = append(video, sendEvent{at: capture + 40*time.Millisecond + time.Duration(i)*time.Millisecond, pkt: marshal(t, p)})
		}
	}
	ap := rtp.NewPacketizer(1200, opusPT, 1, &codecs.OpusPayloader{}, rtp.NewFixedSequencer(100), 48000)
	for i, pkt := range s.audio {
		capture := time.Duration(i) * 20 * time.Millisecond
		ts := uint32(5e6 + i*960)
		if capture < 200*time.Millisecond {
			ap.Packetize(pkt, 960) // before the audio track started
			continue
		}
		if i%50 == 10 {
			audio = append(audio, sendEvent{at: capture + 10*time.Millisecond, sr: true, ntp: toNTP(senderBase.Add(capture)), ts: ts})
		}
		for _, p := range ap.Packetize(pkt, 960) {
			p.Timestamp = ts
			audio = append(audio, sendEvent{at: capture + 10*time.Millisecond, pkt: marshal(t, p)})
		}
	}
	return video, audio
}

// mangle drops 5 % of the packets (never reports) at random, swaps 2 %
// with their next neighbour and sends 1 % twice, with a fixed seed.
func mangle(evs []sendEvent, seed uint64) (out []sendEvent, dropped int) {
	rng := rand.New(rand.NewPCG(seed, seed))
	var pkts []int
	for i, e := range evs {
		if !e.sr {
			pkts = append(pkts, i)
		}
	}
	fate := map[int]int{} // 1 drop, 2 swap with next, 3 duplicate
	perm := rng.Perm(len(pkts))
	n := len(pkts)
	for j, p := range perm {
		switch {
		case j < n*5/100:
			fate[pkts[p]] = 1
		case j < n*7/100:
			fate[pkts[p]] = 2
		case j < n*8/100:
			fate[pkts[p]] = 3
		}
	}
	for i := 0; i < len(evs); i++ {
		e := evs[i]
		switch fate[i] {
		case 1:
			dropped++
			continue
		case 2:
			if i+1 < len(evs) && !evs[i+1].sr && fate[i+1] == 0 {
				next := evs[i+1]
				next.at, e.at = e.at, next.at
				out = append(out, next, e)
				i++
				continue
			}
		case 3:
			out = append(out, e)
		}
		out = append(out, e)
	}
	return out, dropped
}

// play sends events to a new track at their (sped-up) time, from a
// goroutine of its own like the SFU does.
func play(t *testing.T, wg *sync.WaitGroup, r *Recorder, info sfu.TrackInfo, evs []sendEvent, realStart time.Time) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		var w sfu.TrackWriter
		for _, e := range evs {
			if d := time.Until(realStart.Add(e.at / timeSpeedup)); d > 0 {
				time.Sleep(d)
			}
			if w == nil {
				if w = r.StartTrack(info); w == nil {
					t.Error("StartTrack returned nil")
					return
				}
			}
			if e.sr {
				w.SenderReport(e.ntp, e.ts)
			} else if err := w.WriteRTP(e.pkt); err != nil {
				t.Errorf("WriteRTP: %v", err)
			}
		}
		if err := w.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
}

type probe struct {
	Streams []struct {
		CodecName string `json:"codec_name"`
		Width     int    `json:"width"`
		Height    int    `json:"height"`
	} `json:"streams"`
	Format struct {
		Duration string `json:"duration"`
	} `json:"format"`
}

// recordSample plays the sample through a Recorder and returns the file.
func recordSample(t *testing.T, s sample, lossy bool) (path string, keyReqs int64, dropped, total int) {
	t.Helper()
	realStart := time.Now()
	base := time.Date(2026, 11, 21, 15, 4, 5, 0, time.UTC)
	now := func() time.Time { return base.Add(time.Since(realStart) * timeSpeedup) }
	log, _ := newTestLogger()
	r, err := New(Config{Dir: t.TempDir(), Now: now, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	video, audio := streamEvents(t, s, base.Add(time.Hour))
	total = len(video) + len(audio)
	if lossy {
		var d1, d2 int
		video, d1 = mangle(video, 1)
		audio, d2 = mangle(audio, 2)
		dropped = d1 + d2
	}
	var reqs atomic.Int64
	var wg sync.WaitGroup
	play(t, &wg, r, videoInfo("call-1", "Zoë", 2, &reqs), video, realStart)
	play(t, &wg, r, audioInfo("call-1", "Zoë", 1), audio, realStart)
	wg.Wait()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	files := webmFiles(t, r.dir)
	if len(files) != 1 {
		t.Fatalf("files %v, want one", files)
	}
	return filepath.Join(r.dir, files[0]), reqs.Load(), dropped, total
}

// checkPlayable runs ffprobe and a full ffmpeg decode on the file.
func checkPlayable(t *testing.T, ffmpeg, ffprobe, path string) {
	t.Helper()
	var pr probe
	if err := json.Unmarshal(run(t, ffprobe, "-v", "error", "-show_streams", "-show_format", "-of", "json", path), &pr); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, st := range pr.Streams {
		names = append(names, st.CodecName)
	}
	if len(pr.Streams) != 2 || names[0] != "vp8" || names[1] != "opus" {
		t.Errorf("streams %v, want vp8 and opus", names)
	} else if pr.Streams[0].Width != 320 || pr.Streams[0].Height != 240 {
		t.Errorf("video %dx%d, want 320x240", pr.Streams[0].Width, pr.Streams[0].Height)
	}
	d, err := strconv.ParseFloat(pr.Format.Duration, 64)
	if err != nil || math.Abs(d-sampleSeconds) > 0.1*sampleSeconds {
		t.Errorf("duration %q, want %d s ± 10 %%", pr.Format.Duration, sampleSeconds)
	}
	t.Logf("%s: duration %.3f s", filepath.Base(path), d)
	if out := run(t, ffmpeg, "-v", "error", "-i", path, "-f", "null", "-"); len(out) > 0 {
		t.Errorf("ffmpeg decoding errors:\n%s", out)
	}
}

func TestIntegrationCleanSample(t *testing.T) {
	ffmpeg, ffprobe := requireFFmpeg(t)
	s := makeSample(t, ffmpeg)
	path, keyReqs, _, _ := recordSample(t, s, false)
	checkPlayable(t, ffmpeg, ffprobe, path)
	p := parseWebmFile(t, path)
	checkStructure(t, p)
	vt, _ := p.track("V_VP8")
	at, _ := p.track("A_OPUS")
	vb, ab := p.blocksOf(vt.number), p.blocksOf(at.number)
	if len(vb) != len(s.video) || len(ab) != len(s.audio)-10 {
		t.Fatalf("%d video and %d audio frames, want %d and %d", len(vb), len(ab), len(s.video), len(s.audio)-10)
	}
	for k, b := range vb {
		if !bytes.Equal(b.data, s.video[k]) {
			t.Fatalf("video frame %d differs", k)
		}
		if want := int64(math.Round(float64(k) * 1000 / 30)); b.ms < want-3 || b.ms > want+3 {
			t.Errorf("video frame %d at %d ms, want %d", k, b.ms, want)
		}
	}
	for i, b := range ab {
		if !bytes.Equal(b.data, s.audio[i+10]) {
			t.Fatalf("audio packet %d differs", i+10)
		}
		if want := int64(i+10) * 20; b.ms < want-3 || b.ms > want+3 {
			t.Errorf("audio packet %d at %d ms, want %d (A/V sync)", i+10, b.ms, want)
		}
	}
	if len(p.cues) < sampleSeconds || keyReqs != 0 {
		t.Errorf("%d cues (want one per keyframe), %d keyframe requests (want 0)", len(p.cues), keyReqs)
	}
	st, _ := os.Stat(path)
	t.Logf("clean: %d bytes, %d video + %d audio frames, %d cues", st.Size(), len(vb), len(ab), len(p.cues))
}

func TestIntegrationLossySample(t *testing.T) {
	ffmpeg, ffprobe := requireFFmpeg(t)
	s := makeSample(t, ffmpeg)
	path, keyReqs, dropped, total := recordSample(t, s, true)
	checkPlayable(t, ffmpeg, ffprobe, path)
	p := parseWebmFile(t, path)
	checkStructure(t, p)
	vt, _ := p.track("V_VP8")
	at, _ := p.track("A_OPUS")

	index := map[string]int{}
	for k, f := range s.video {
		index[string(f)] = k
	}
	last := -1
	vb := p.blocksOf(vt.number)
	for _, b := range vb {
		k, ok := index[string(b.data)]
		if !ok {
			t.Fatalf("a video frame in the file is not one of the sample's (broken frame written)")
		}
		if k <= last {
			t.Fatalf("video frame %d after %d", k, last)
		}
		if k != last+1 && k%30 != 0 {
			t.Errorf("video continues at frame %d after frame %d: not a keyframe", k, last)
		}
		last = k
	}
	audioIndex := map[string]bool{}
	for _, a := range s.audio {
		audioIndex[string(a)] = true
	}
	ab := p.blocksOf(at.number)
	for _, b := range ab {
		if !audioIndex[string(b.data)] {
			t.Fatal("an audio frame in the file is not one of the sample's")
		}
	}
	sent := len(s.audio) - 10
	if len(ab) < sent*85/100 || len(ab) >= sent {
		t.Errorf("%d of %d audio frames written with 5 %% loss", len(ab), sent)
	}
	if len(vb) < 30 || keyReqs == 0 {
		t.Errorf("%d video frames, %d keyframe requests", len(vb), keyReqs)
	}
	st, _ := os.Stat(path)
	t.Logf("lossy: %d of %d packets dropped; %d bytes, %d video + %d audio frames, %d keyframe requests",
		dropped, total, st.Size(), len(vb), len(ab), keyReqs)
}
