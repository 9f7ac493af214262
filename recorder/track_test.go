package recorder

import (
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/rtp"

	"videochat/sfu"
)

const frameInterval = time.Second / 30

// recordVideo feeds frames of packets into a video-only recording, one
// frame per 33 ms of the fake clock, after passing each frame's packets
// through mangle (which may drop, duplicate or reorder them; it sees the
// packets of frame i and may return packets of any frame). It returns
// the parsed file, the track and the keyframe requests.
func recordVideo(t *testing.T, frames [][]*rtp.Packet, mangle func(i int, pkts []*rtp.Packet) []*rtp.Packet) (*parsedWebm, *track, int64) {
	t.Helper()
	r, clk, _ := newTestRecorder(t, Config{})
	var keyReqs atomic.Int64
	w := r.StartTrack(videoInfo("call1", "alice", 1234, &keyReqs))
	if w == nil {
		t.Fatal("StartTrack returned nil")
	}
	for i, pkts := range frames {
		clk.Advance(frameInterval)
		if mangle != nil {
			pkts = mangle(i, pkts)
		}
		for _, p := range pkts {
			if err := w.WriteRTP(marshal(t, p)); err != nil {
				t.Fatalf("WriteRTP: %v", err)
			}
		}
	}
	tr := w.(*track)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	files := webmFiles(t, r.dir)
	if len(files) != 1 {
		t.Fatalf("files %v, want one", files)
	}
	p := parseWebmFile(t, filepath.Join(r.dir, files[0]))
	checkStructure(t, p)
	return p, tr, keyReqs.Load()
}

// videoIndexes returns the frame indexes in the file's video track.
func videoIndexes(t *testing.T, p *parsedWebm) []int {
	t.Helper()
	vt, ok := p.track("V_VP8")
	if !ok {
		t.Fatal("no video track")
	}
	var idx []int
	for _, b := range p.blocksOf(vt.number) {
		idx = append(idx, synthIndex(b.data))
	}
	return idx
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func TestVideoCleanStream(t *testing.T) {
	frames := videoPackets(60, 30, 700, 300, 1000, 1234)
	p, _, keyReqs := recordVideo(t, frames, nil)
	if got := videoIndexes(t, p); !slices.Equal(got, seq(0, 60)) {
		t.Fatalf("frames %v, want 0..59", got)
	}
	vt, _ := p.track("V_VP8")
	if vt.width != 320 || vt.height != 240 {
		t.Errorf("size %dx%d, want 320x240", vt.width, vt.height)
	}
	if len(p.cues) != 2 || p.cues[0].timeMs != 0 || p.cues[1].timeMs < 990 || p.cues[1].timeMs > 1010 {
		t.Errorf("cues %+v, want at 0 and ~1000 ms", p.cues)
	}
	blocks := p.blocksOf(vt.number)
	if last := blocks[len(blocks)-1].ms; last < 1960 || last > 1980 {
		t.Errorf("last frame at %d ms, want ~1967", last)
	}
	if p.duration < 1990 || p.duration > 2010 {
		t.Errorf("duration %v ms, want ~2000", p.duration)
	}
	if keyReqs != 0 {
		t.Errorf("%d keyframe requests on a clean stream", keyReqs)
	}
}

func TestVideoReorderingRepaired(t *testing.T) {
	frames := videoPackets(60, 30, 700, 300, 1000, 1234)
	var held []*rtp.Packet
	p, tr, keyReqs := recordVideo(t, frames, func(i int, pkts []*rtp.Packet) []*rtp.Packet {
		switch {
		case i%7 == 3: // packets of one frame backwards
			slices.Reverse(pkts)
		case i%11 == 5: // a frame's first packet comes after the next frame
			held = append(held, pkts[0])
			return pkts[1:]
		case len(held) > 0:
			pkts = append(pkts, held...)
			held = nil
		}
		return pkts
	})
	if got := videoIndexes(t, p); !slices.Equal(got, seq(0, 60)) {
		t.Fatalf("frames %v, want 0..59", got)
	}
	if keyReqs != 0 || tr.jb.stats.lost != 0 {
		t.Errorf("keyframe requests %d, lost %d; want 0", keyReqs, tr.jb.stats.lost)
	}
}

func TestVideoDuplicatesIgnored(t *testing.T) {
	frames := videoPackets(60, 30, 700, 300, 1000, 1234)
	extra := 0
	p, tr, keyReqs := recordVideo(t, frames, func(i int, pkts []*rtp.Packet) []*rtp.Packet {
		var out []*rtp.Packet
		if i%5 == 0 {
			// Duplicates while the frame's first packet is still missing.
			out = append(out, pkts[1:]...)
			out = append(out, pkts[1:]...)
			out = append(out, pkts[0])
			extra += len(pkts) - 1
		} else {
			out = append(slices.Clone(pkts), pkts...) // every packet twice
			extra += len(pkts)
		}
		if i >= 10 {
			out = append(out, frames[i-10]...) // and a stale retransmission
			extra += len(frames[i-10])
		}
		return out
	})
	if got := videoIndexes(t, p); !slices.Equal(got, seq(0, 60)) {
		t.Fatalf("frames %v, want 0..59 once each", got)
	}
	st := tr.jb.stats
	if st.duplicates == 0 || st.late == 0 || int(st.duplicates+st.late) != extra {
		t.Errorf("stats %+v: want %d duplicates and late packets in all, some of each", st, extra)
	}
	if keyReqs != 0 {
		t.Errorf("%d keyframe requests", keyReqs)
	}
}

func TestVideoGapSkipsToKeyframe(t *testing.T) {
	frames := videoPackets(60, 30, 700, 300, 1000, 1234)
	p, _, keyReqs := recordVideo(t, frames, func(i int, pkts []*rtp.Packet) []*rtp.Packet {
		if i == 5 {
			return append(pkts[:1:1], pkts[2:]...) // the middle packet never arrives
		}
		return pkts
	})
	want := append(seq(0, 5), seq(30, 60)...)
	if got := videoIndexes(t, p); !slices.Equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
	if keyReqs < 1 {
		t.Errorf("RequestKeyframe not called after an unrecoverable gap")
	}
}

func TestVideoLostWholeFrameSkipsToKeyframe(t *testing.T) {
	frames := videoPackets(60, 30, 700, 300, 1000, 1234)
	p, _, keyReqs := recordVideo(t, frames, func(i int, pkts []*rtp.Packet) []*rtp.Packet {
		if i == 7 {
			return nil
		}
		return pkts
	})
	want := append(seq(0, 7), seq(30, 60)...)
	if got := videoIndexes(t, p); !slices.Equal(got, want) {
		t.Fatalf("frames %v, want %v", got, want)
	}
	if keyReqs < 1 {
		t.Errorf("RequestKeyframe not called")
	}
}

func TestVideoLostPaddingHarmless(t *testing.T) {
	pz := rtp.NewPacketizer(300, vp8PT, 1234, nil, rtp.NewFixedSequencer(0), 90000)
	frames := videoPackets(60, 30, 700, 300, 1000, 1234)
	// Renumber: after every frame two padding packets, one of them lost.
	var seqNo uint16 = 1000
	for i, pkts := range frames {
		for _, p := range pkts {
			p.SequenceNumber = seqNo
			seqNo++
		}
		pad := pz.GeneratePadding(2)
		for _, p := range pad {
			p.SequenceNumber, p.Timestamp = seqNo, pkts[0].Timestamp
			seqNo++
		}
		frames[i] = append(pkts, pad[1])
		if i == 0 {
			// pion's payloader sends frame 0 without a picture ID; the
			// loss of padding is recognised once picture IDs are there.
			frames[i] = append(pkts, pad...)
		} // else pad[0] is lost
	}
	p, _, keyReqs := recordVideo(t, frames, nil)
	if got := videoIndexes(t, p); !slices.Equal(got, seq(0, 60)) {
		t.Fatalf("frames %v, want 0..59", got)
	}
	if keyReqs != 0 {
		t.Errorf("%d keyframe requests for lost padding", keyReqs)
	}
}

func TestVideoSequenceWrap(t *testing.T) {
	frames := videoPackets(60, 30, 700, 300, 65500, 1234) // wraps at frame ~12
	p, tr, _ := recordVideo(t, frames, func(i int, pkts []*rtp.Packet) []*rtp.Packet {
		if i == 12 || i == 13 {
			slices.Reverse(pkts)
		}
		return pkts
	})
	if got := videoIndexes(t, p); !slices.Equal(got, seq(0, 60)) {
		t.Fatalf("frames %v, want 0..59", got)
	}
	if tr.jb.stats.resets != 0 || tr.jb.stats.lost != 0 {
		t.Errorf("stats %+v after wrap-around", tr.jb.stats)
	}
}

func TestJitterBufferWaitsThenSkips(t *testing.T) {
	j := newJitterBuffer(250 * time.Millisecond)
	var got []uint16
	var losses []int
	emit := func(p *packet, lost int) { got = append(got, p.seq); losses = append(losses, lost) }
	push := func(seq uint16, now time.Duration) {
		p := &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq}, Payload: []byte{1}}
		j.push(p, int64(now), emit)
	}
	push(10, 0)
	push(9, 10*time.Millisecond) // out of order at the start: still first
	j.release(int64(50*time.Millisecond), emit)
	if len(got) != 0 {
		t.Fatalf("emitted %v while priming", got)
	}
	j.release(int64(100*time.Millisecond), emit)
	push(12, 110*time.Millisecond) // 11 missing
	push(13, 120*time.Millisecond)
	if !slices.Equal(got, []uint16{9, 10}) {
		t.Fatalf("emitted %v before the hole timed out", got)
	}
	j.release(int64(359*time.Millisecond), emit)
	if len(got) != 2 {
		t.Fatalf("hole skipped too early: %v", got)
	}
	j.release(int64(360*time.Millisecond), emit)
	if !slices.Equal(got, []uint16{9, 10, 12, 13}) || !slices.Equal(losses, []int{0, 0, 1, 0}) {
		t.Fatalf("emitted %v losses %v", got, losses)
	}
	push(11, 400*time.Millisecond) // too late now
	push(13, 400*time.Millisecond) // duplicate of an emitted packet
	push(14, 410*time.Millisecond)
	if !slices.Equal(got, []uint16{9, 10, 12, 13, 14}) || j.stats.late != 2 {
		t.Fatalf("emitted %v, stats %+v", got, j.stats)
	}
	push(14+jitterSlots, 420*time.Millisecond) // a jump: the stream restarted
	push(15+jitterSlots, 430*time.Millisecond)
	if got[len(got)-1] != 15+jitterSlots || losses[len(losses)-2] == 0 || j.stats.resets != 1 {
		t.Fatalf("after a jump: emitted %v losses %v stats %+v", got, losses, j.stats)
	}
}

func TestMalformedInputNeverPanics(t *testing.T) {
	r, clk, _ := newTestRecorder(t, Config{})
	v := r.StartTrack(videoInfo("c", "p", 0, nil))
	a := r.StartTrack(audioInfo("c", "p", 0))
	inputs := [][]byte{nil, {}, {0x80}, make([]byte, 12), {0xa0, 0x60, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0xff},
		{0x90, 0x60, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9}, {0x80, 0xe0, 0, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0x80},
		{0x80, 0xe0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 1, 0x90, 0x80, 0xff}, {0x80, 0xe0, 0, 5, 0, 0, 0, 1, 0, 0, 0, 1, 0x10, 0x00}}
	seed := uint32(1)
	for i := 0; i < 3000; i++ {
		seed = seed*1664525 + 1013904223
		b := make([]byte, seed%64)
		for j := range b {
			seed = seed*1664525 + 1013904223
			b[j] = byte(seed >> 24)
		}
		if len(b) > 1 {
			b[0] = 0x80 | b[0]&0x3f
		}
		inputs = append(inputs, b)
	}
	for i, in := range inputs {
		clk.Advance(time.Millisecond)
		for _, w := range []sfu.TrackWriter{v, a} {
			if err := w.WriteRTP(in); err != nil {
				t.Fatalf("input %d: %v", i, err)
			}
			w.SenderReport(uint64(i)<<40, uint32(i)*7919)
		}
	}
	if err := v.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
}
