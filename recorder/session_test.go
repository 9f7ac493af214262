package recorder

import (
	"bytes"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"

	"videochat/sfu"
)

// opusPacket is a fake Opus packet i of a stream starting at seq/ts 0.
func opusPacket(i int, ssrc uint32) *rtp.Packet {
	return &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: opusPT, SequenceNumber: uint16(i),
		Timestamp: uint32(i * 960), SSRC: ssrc, Marker: i == 0},
		Payload: []byte{0xfc, byte(i >> 8), byte(i), 0xaa, 0xbb}}
}

// toNTP converts a time to a 64-bit NTP timestamp.
func toNTP(t time.Time) uint64 {
	ns := t.UnixNano()
	sec := uint64(ns/1e9) + ntpUnixOffset
	frac := (uint64(ns%1e9) << 32) / 1e9
	return sec<<32 | frac
}

// avScenario plays a participant's audio (from 0) and video (starting
// at videoStart) through the recorder on the fake clock: capture time c
// arrives at c+delay. With reports, each track sends a sender report
// every second from a sender clock one hour ahead of the server's.
type avScenario struct {
	dur        time.Duration
	videoStart time.Duration // 0 = no video
	audio      bool
	audioDelay time.Duration
	videoDelay time.Duration
	reports    bool
}

func (sc avScenario) run(t *testing.T, r *Recorder, clk *fakeClock, name string) {
	t.Helper()
	base := clk.Now()
	senderBase := base.Add(time.Hour)
	type event struct {
		at  time.Duration
		w   *sfu.TrackWriter
		pkt *rtp.Packet
		sr  bool
		ts  uint32
		cap time.Duration
	}
	var aw, vw sfu.TrackWriter
	var evs []event
	if sc.audio {
		for i := 0; time.Duration(i)*20*time.Millisecond < sc.dur; i++ {
			c := time.Duration(i) * 20 * time.Millisecond
			evs = append(evs, event{at: c + sc.audioDelay, w: &aw, pkt: opusPacket(i, 1)})
			if sc.reports && i%50 == 0 {
				evs = append(evs, event{at: c + sc.audioDelay, w: &aw, sr: true, ts: uint32(i * 960), cap: c})
			}
		}
	}
	if sc.videoStart > 0 {
		frames := videoPackets(int((sc.dur-sc.videoStart)/frameInterval), 30, 700, 400, 5000, 2)
		for k, pkts := range frames {
			c := sc.videoStart + time.Duration(k)*frameInterval
			ts := uint32(c * 90000 / time.Second)
			for _, p := range pkts {
				p.Timestamp = ts
				evs = append(evs, event{at: c + sc.videoDelay, w: &vw, pkt: p})
			}
			if sc.reports && k%30 == 0 {
				evs = append(evs, event{at: c + sc.videoDelay, w: &vw, sr: true, ts: ts, cap: c})
			}
		}
	}
	sortEvents := func(a, b event) int { return int(a.at - b.at) }
	slices.SortStableFunc(evs, sortEvents)
	now := time.Duration(0)
	for _, e := range evs {
		clk.Advance(e.at - now)
		now = e.at
		if *e.w == nil {
			if e.w == &aw {
				aw = r.StartTrack(audioInfo("call", name, 1))
			} else {
				vw = r.StartTrack(videoInfo("call", name, 2, nil))
			}
		}
		if e.sr {
			(*e.w).SenderReport(toNTP(senderBase.Add(e.cap)), e.ts)
			continue
		}
		if err := (*e.w).WriteRTP(marshal(t, e.pkt)); err != nil {
			t.Fatal(err)
		}
	}
	for _, w := range []sfu.TrackWriter{vw, aw} {
		if w != nil {
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func onlyFile(t *testing.T, r *Recorder) *parsedWebm {
	t.Helper()
	files := webmFiles(t, r.dir)
	if len(files) != 1 {
		t.Fatalf("files %v, want one", files)
	}
	p := parseWebmFile(t, filepath.Join(r.dir, files[0]))
	checkStructure(t, p)
	return p
}

func TestAudioAndVideoInOneFileInSync(t *testing.T) {
	for _, reports := range []bool{false, true} {
		t.Run(map[bool]string{false: "arrival", true: "sender-reports"}[reports], func(t *testing.T) {
			r, clk, _ := newTestRecorder(t, Config{})
			sc := avScenario{dur: 3 * time.Second, audio: true, videoStart: 300 * time.Millisecond,
				audioDelay: 10 * time.Millisecond, videoDelay: 60 * time.Millisecond, reports: reports}
			sc.run(t, r, clk, "alice")
			p := onlyFile(t, r)
			vt, okV := p.track("V_VP8")
			at, okA := p.track("A_OPUS")
			if !okV || !okA || len(p.tracks) != 2 {
				t.Fatalf("tracks %+v, want V_VP8 and A_OPUS", p.tracks)
			}
			if !bytes.HasPrefix(at.private, []byte("OpusHead")) || len(at.private) != 19 {
				t.Errorf("Opus CodecPrivate %x", at.private)
			}
			audio, video := p.blocksOf(at.number), p.blocksOf(vt.number)
			if len(audio) != 150 || len(video) != 81 {
				t.Errorf("%d audio and %d video frames, want 150 and 81", len(audio), len(video))
			}
			// Capture times: audio 0, video 300 ms. Without reports the
			// extra 50 ms of video network delay shows; with them, not.
			want := int64(300)
			if !reports {
				want = 350
			}
			if audio[0].ms != 0 || video[0].ms < want-3 || video[0].ms > want+3 {
				t.Errorf("first audio at %d ms, first video at %d ms; want 0 and %d", audio[0].ms, video[0].ms, want)
			}
			if p.duration < 2950 || p.duration > 3100 {
				t.Errorf("duration %v ms, want ~3000", p.duration)
			}
			// Interleaved: no block is more than a little behind the
			// latest block before it.
			var latest int64
			for _, b := range p.blocks {
				if b.ms < latest-100 {
					t.Fatalf("block at %d ms after one at %d ms", b.ms, latest)
				}
				latest = max(latest, b.ms)
			}
		})
	}
}

func TestAudioOnlyFile(t *testing.T) {
	r, clk, _ := newTestRecorder(t, Config{})
	avScenario{dur: 3 * time.Second, audio: true}.run(t, r, clk, "bob")
	p := onlyFile(t, r)
	if len(p.tracks) != 1 || p.tracks[0].codec != "A_OPUS" {
		t.Fatalf("tracks %+v, want only A_OPUS", p.tracks)
	}
	if n := len(p.blocks); n != 150 {
		t.Errorf("%d audio frames, want 150", n)
	}
}

func TestVideoOnlyFile(t *testing.T) {
	r, clk, _ := newTestRecorder(t, Config{})
	avScenario{dur: 3 * time.Second, videoStart: time.Millisecond}.run(t, r, clk, "carol")
	p := onlyFile(t, r)
	if len(p.tracks) != 1 || p.tracks[0].codec != "V_VP8" || p.tracks[0].width != 320 {
		t.Fatalf("tracks %+v, want only V_VP8 320 wide", p.tracks)
	}
}

func TestLateSecondTrackGetsItsOwnFile(t *testing.T) {
	r, clk, _ := newTestRecorder(t, Config{})
	// Video starts 3 s after audio: the audio file had to start already.
	avScenario{dur: 4 * time.Second, audio: true, videoStart: 3 * time.Second}.run(t, r, clk, "dave")
	files := webmFiles(t, r.dir)
	if len(files) != 2 {
		t.Fatalf("files %v, want two", files)
	}
	var codecs []string
	for _, f := range files {
		p := parseWebmFile(t, filepath.Join(r.dir, f))
		checkStructure(t, p)
		for _, tr := range p.tracks {
			codecs = append(codecs, tr.codec)
		}
	}
	if strings.Join(codecs, ",") != "A_OPUS,V_VP8" {
		t.Errorf("tracks %v, want one audio file and one video file", codecs)
	}
}

func TestVideoHeaderBeforeKeyframe(t *testing.T) {
	r, clk, _ := newTestRecorder(t, Config{})
	var keyReqs atomic.Int64
	a := r.StartTrack(audioInfo("call", "erin", 1))
	v := r.StartTrack(videoInfo("call", "erin", 2, &keyReqs))
	frames := videoPackets(300, 150, 700, 400, 5000, 2) // keyframes at 0 and 5 s
	for ms := 0; ms < 10000; ms++ {                     // 10 s of audio and video
		clk.Advance(time.Millisecond)
		if ms%20 == 0 {
			if err := a.WriteRTP(marshal(t, opusPacket(ms/20, 1))); err != nil {
				t.Fatal(err)
			}
		}
		if k := ms / 33; ms%33 == 0 && k > 0 && k < 300 { // keyframe 0 lost: wait for 150
			for _, p := range frames[k] {
				if err := v.WriteRTP(marshal(t, p)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	_ = v.Close()
	_ = a.Close()
	p := onlyFile(t, r)
	vt, ok := p.track("V_VP8")
	if !ok || vt.width != 320 || vt.height != 240 {
		t.Fatalf("video track %+v: size not patched to 320x240", vt)
	}
	if vb := p.blocksOf(vt.number); len(vb) == 0 || !vb[0].key || synthIndex(vb[0].data) != 150 {
		t.Errorf("video does not start at the keyframe 150")
	}
	if keyReqs.Load() < 3 {
		t.Errorf("%d keyframe requests while waiting 5 s for one, want one a second", keyReqs.Load())
	}
}

func TestRecorderCloseFinalisesOpenFiles(t *testing.T) {
	r, clk, _ := newTestRecorder(t, Config{})
	a := r.StartTrack(audioInfo("call", "frank", 1))
	for i := 0; i < 200; i++ {
		clk.Advance(20 * time.Millisecond)
		if err := a.WriteRTP(marshal(t, opusPacket(i, 1))); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	p := onlyFile(t, r)
	if len(p.blocks) < 190 || p.duration < 3900 {
		t.Errorf("%d frames, duration %v after Close", len(p.blocks), p.duration)
	}
	if err := a.WriteRTP(marshal(t, opusPacket(200, 1))); err != nil {
		t.Errorf("WriteRTP after Close: %v", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("track Close after Recorder.Close: %v", err)
	}
	if w := r.StartTrack(audioInfo("call", "gina", 1)); w != nil {
		t.Errorf("StartTrack after Close returned a writer")
	}
}

func TestUnsupportedCodecNotRecorded(t *testing.T) {
	r, _, _ := newTestRecorder(t, Config{})
	info := videoInfo("call", "h", 1, nil)
	info.Codec.MimeType = "video/H264"
	if w := r.StartTrack(info); w != nil {
		t.Fatal("H264 track accepted")
	}
}
