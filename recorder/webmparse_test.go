package recorder

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"testing"
)

// A minimal WebM reader for tests: it checks the structure the recorder
// writes (known sizes, seek head, cues) and returns the blocks.

type parsedBlock struct {
	track uint64
	ms    int64
	key   bool
	data  []byte
}

type parsedTrack struct {
	number        uint64
	codec         string
	width, height uint64
	private       []byte
}

type parsedWebm struct {
	duration float64
	tracks   []parsedTrack
	blocks   []parsedBlock
	cues     []cuePoint
	seeks    map[uint32]int64
	clusters []int64 // positions relative to the segment data start
	elems    map[uint32]int64
}

func (p *parsedWebm) track(codec string) (parsedTrack, bool) {
	for _, t := range p.tracks {
		if t.codec == codec {
			return t, true
		}
	}
	return parsedTrack{}, false
}

func (p *parsedWebm) blocksOf(track uint64) []parsedBlock {
	var out []parsedBlock
	for _, b := range p.blocks {
		if b.track == track {
			out = append(out, b)
		}
	}
	return out
}

func readVint(b []byte, keepMarker bool) (uint64, int, error) {
	if len(b) == 0 || b[0] == 0 {
		return 0, 0, fmt.Errorf("bad vint")
	}
	l := 1
	for b[0]&(0x80>>(l-1)) == 0 {
		l++
	}
	if len(b) < l {
		return 0, 0, fmt.Errorf("short vint")
	}
	v := uint64(b[0])
	if !keepMarker {
		v &= uint64(0xff >> l)
	}
	for i := 1; i < l; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v, l, nil
}

func isMaster(id uint32) bool {
	switch id {
	case idSegment, idSeekHead, idSeek, idInfo, idTracks, idTrackEntry, idVideo, idAudio,
		idCluster, idCues, idCuePoint, idCueTrackPositions:
		return true
	}
	return false
}

func parseWebmFile(t *testing.T, path string) *parsedWebm {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	p, err := parseWebm(b)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return p
}

func parseWebm(b []byte) (*parsedWebm, error) {
	p := &parsedWebm{seeks: map[uint32]int64{}, elems: map[uint32]int64{}}
	st := &parseState{p: p}
	if err := st.walk(b, 0, 0); err != nil {
		return nil, err
	}
	if p.elems[idEBML] != 1 || p.elems[idSegment] != 1 {
		return nil, fmt.Errorf("want one EBML header and one Segment, got %v", p.elems)
	}
	return p, nil
}

type parseState struct {
	p            *parsedWebm
	segDataStart int64
	clusterTC    int64
	seekID       uint32
	track        *parsedTrack
	cue          cuePoint
}

// walk parses the elements of b, which starts at file offset base.
func (st *parseState) walk(b []byte, base int64, depth int) error {
	for off := 0; off < len(b); {
		id, il, err := readVint(b[off:], true)
		if err != nil {
			return fmt.Errorf("at %d: id: %w", base+int64(off), err)
		}
		size, sl, err := readVint(b[off+il:], false)
		if err != nil {
			return fmt.Errorf("at %d: size: %w", base+int64(off), err)
		}
		start := off + il + sl
		if size > uint64(len(b)-start) {
			return fmt.Errorf("at %d: element %x size %d exceeds parent (%d left)", base+int64(off), id, size, len(b)-start)
		}
		body := b[start : start+int(size)]
		st.p.elems[uint32(id)]++
		if err := st.element(uint32(id), body, base+int64(off), base+int64(start), depth); err != nil {
			return err
		}
		off = start + int(size)
	}
	return nil
}

func beUint(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

func (st *parseState) element(id uint32, body []byte, pos, dataPos int64, depth int) error {
	p := st.p
	switch id {
	case idSegment:
		st.segDataStart = dataPos
	case idCluster:
		p.clusters = append(p.clusters, pos-st.segDataStart)
	case idTrackEntry:
		p.tracks = append(p.tracks, parsedTrack{})
		st.track = &p.tracks[len(p.tracks)-1]
	case idCuePoint:
		st.cue = cuePoint{}
	}
	if isMaster(id) {
		if err := st.walk(body, dataPos, depth+1); err != nil {
			return err
		}
		if id == idCuePoint {
			p.cues = append(p.cues, st.cue)
		}
		return nil
	}
	return st.leaf(id, body)
}

func (st *parseState) leaf(id uint32, body []byte) error {
	p := st.p
	switch id {
	case idDuration:
		if len(body) != 8 {
			return fmt.Errorf("duration of %d bytes", len(body))
		}
		p.duration = math.Float64frombits(binary.BigEndian.Uint64(body))
	case idSeekID:
		st.seekID = uint32(beUint(body))
	case idSeekPosition:
		p.seeks[st.seekID] = int64(beUint(body))
	case idTrackNumber:
		st.track.number = beUint(body)
	case idCodecID:
		st.track.codec = string(body)
	case idCodecPrivate:
		st.track.private = append([]byte(nil), body...)
	case idPixelWidth:
		st.track.width = beUint(body)
	case idPixelHeight:
		st.track.height = beUint(body)
	case idTimecode:
		st.clusterTC = int64(beUint(body))
	case idCueTime:
		st.cue.timeMs = int64(beUint(body))
	case idCueTrack:
		st.cue.track = beUint(body)
	case idCueClusterPos:
		st.cue.position = int64(beUint(body))
	case idSimpleBlock:
		tn, l, err := readVint(body, false)
		if err != nil || len(body) < l+3 {
			return fmt.Errorf("bad SimpleBlock")
		}
		rel := int16(binary.BigEndian.Uint16(body[l:]))
		p.blocks = append(p.blocks, parsedBlock{track: tn, ms: st.clusterTC + int64(rel),
			key: body[l+2]&0x80 != 0, data: body[l+3:]})
	}
	return nil
}

// checkStructure verifies what every finalised file must have.
func checkStructure(t *testing.T, p *parsedWebm) {
	t.Helper()
	if p.duration <= 0 {
		t.Errorf("duration %v, want > 0", p.duration)
	}
	for _, id := range []uint32{idInfo, idTracks, idCues} {
		if _, ok := p.seeks[id]; !ok {
			t.Errorf("seek head lacks %x", id)
		}
	}
	if len(p.cues) == 0 {
		t.Errorf("no cues")
	}
	clusters := map[int64]bool{}
	for _, c := range p.clusters {
		clusters[c] = true
	}
	for _, c := range p.cues {
		if !clusters[c.position] {
			t.Errorf("cue at %d ms points to %d, not a cluster", c.timeMs, c.position)
		}
	}
	last := map[uint64]int64{}
	for _, b := range p.blocks {
		if l, ok := last[b.track]; ok && b.ms <= l {
			t.Errorf("track %d: block at %d ms after %d ms", b.track, b.ms, l)
		}
		last[b.track] = b.ms
	}
}
