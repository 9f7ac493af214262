package recorder

import (
	"encoding/binary"
	"errors"
	"io"
	"time"
)

// sink is where a WebM file goes: an *os.File, or a test double.
type sink interface {
	io.Writer
	io.WriterAt
	Sync() error
	Close() error
}

const (
	trackTypeVideo = 1
	trackTypeAudio = 2

	// A cluster is cut at a video keyframe, after maxClusterMs, or when
	// its body exceeds maxClusterBytes, whichever comes first.
	maxClusterMs    = 5000
	maxClusterBytes = 8 << 20

	seekEntrySize   = 21 // Seek{SeekID(4 bytes), SeekPosition(8 bytes)}
	durationElemLen = 11 // Duration: 2-byte ID, 1-byte size, float64

	// Placeholder frame size when the header is written before the first
	// video keyframe; patched in place once it arrives.
	defaultWidth, defaultHeight = 640, 480
)

// webmTrack describes one track entry of the file.
type webmTrack struct {
	number        uint64
	video         bool
	width, height int // video only; 0 = unknown yet
}

type cuePoint struct {
	timeMs   int64
	track    uint64
	position int64 // cluster offset from the segment's data start
}

// webmWriter writes one Matroska/WebM file front to back: the header
// with placeholders, clusters of known size, and at the end the Cues,
// after which Duration, the Cues seek entry and the Segment size are
// patched in place. An interrupted file is still playable: the Segment
// has "unknown" size and the placeholders are Void elements.
type webmWriter struct {
	w   sink
	off int64 // bytes written so far

	segSizeOff   int64 // offset of the Segment's 8-byte size field
	segDataStart int64
	seekVoidOff  int64 // Void in the SeekHead, becomes Seek(Cues)
	durVoidOff   int64 // Void in Info, becomes Duration
	dimsOff      int64 // PixelWidth's value (2 bytes); PixelHeight's is 4 bytes later
	videoTrack   uint64
	dimsPending  bool

	cluster     []byte // body of the open cluster (without Timecode)
	clusterTC   int64
	clusterOpen bool
	clusterCue  bool // the open cluster starts with a cue-worthy frame
	cueTrack    uint64
	cues        []cuePoint
}

func newWebmWriter(w sink) *webmWriter { return &webmWriter{w: w} }

func (m *webmWriter) write(b []byte) error {
	n, err := m.w.Write(b)
	m.off += int64(n)
	if err == nil && n != len(b) {
		err = io.ErrShortWrite
	}
	return err
}

func ebmlHeader() []byte {
	var c []byte
	c = appendUint(c, idEBMLVersion, 1)
	c = appendUint(c, idEBMLReadVersion, 1)
	c = appendUint(c, idEBMLMaxIDLength, 4)
	c = appendUint(c, idEBMLMaxSizeLength, 8)
	c = appendString(c, idDocType, "webm")
	c = appendUint(c, idDocTypeVersion, 4)
	c = appendUint(c, idDocTypeReadVersion, 2)
	return appendMaster(nil, idEBML, c)
}

// opusHead is the CodecPrivate of an Opus track (RFC 7845, 5.1).
func opusHead() []byte {
	b := []byte("OpusHead")
	b = append(b, 1, 2)                            // version, channels
	b = binary.LittleEndian.AppendUint16(b, 0)     // pre-skip
	b = binary.LittleEndian.AppendUint32(b, 48000) // input sample rate
	b = binary.LittleEndian.AppendUint16(b, 0)     // output gain
	return append(b, 0)                            // mapping family
}

// trackEntry encodes one TrackEntry; dimsAt is the offset of PixelWidth's
// value within the returned bytes (video only, else -1).
func trackEntry(t webmTrack) (b []byte, dimsAt int) {
	var c []byte
	c = appendUint(c, idTrackNumber, t.number)
	c = appendUint(c, idTrackUID, t.number)
	c = appendUint(c, idFlagLacing, 0)
	dimsAt = -1
	if t.video {
		c = appendUint(c, idTrackType, trackTypeVideo)
		c = appendString(c, idCodecID, "V_VP8")
		w, h := t.width, t.height
		if w <= 0 || h <= 0 {
			w, h = defaultWidth, defaultHeight
		}
		var v []byte
		v = appendUintN(v, idPixelWidth, uint64(w), 2)
		v = appendUintN(v, idPixelHeight, uint64(h), 2)
		c = appendMaster(c, idVideo, v)
		// Video is the last child and its size fits one byte.
		dimsAt = len(c) - len(v) + 2
	} else {
		c = appendUint(c, idTrackType, trackTypeAudio)
		c = appendString(c, idCodecID, "A_OPUS")
		c = appendBytes(c, idCodecPrivate, opusHead())
		c = appendUint(c, idCodecDelay, 0)
		c = appendUint(c, idSeekPreRoll, uint64(80*time.Millisecond))
		var a []byte
		a = appendFloat(a, idSamplingFreq, 48000)
		a = appendUint(a, idChannels, 2)
		c = appendMaster(c, idAudio, a)
	}
	b = appendID(nil, idTrackEntry)
	b = appendSize(b, uint64(len(c)))
	if dimsAt >= 0 {
		dimsAt += len(b)
	}
	return append(b, c...), dimsAt
}

func seekEntry(id uint32, pos uint64) []byte {
	var c []byte
	c = appendBytes(c, idSeekID, appendID(nil, id))
	c = appendUintN(c, idSeekPosition, pos, 8)
	return appendMaster(nil, idSeek, c)
}

// writeHeader writes everything up to the first cluster.
func (m *webmWriter) writeHeader(tracks []webmTrack, start time.Time) error {
	hdr := ebmlHeader()
	hdr = appendID(hdr, idSegment)
	m.segSizeOff = int64(len(hdr))
	hdr = append(hdr, 0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF) // unknown size
	m.segDataStart = int64(len(hdr))

	var info []byte
	info = appendUint(info, idTimecodeScale, uint64(time.Millisecond))
	info = appendString(info, idMuxingApp, "videochat recorder")
	info = appendString(info, idWritingApp, "videochat recorder")
	info = appendUintN(info, idDateUTC, uint64(start.UnixNano()-matroskaEpochUnix*int64(time.Second)), 8)
	durAt := len(info)
	info = append(info, voidElement(durationElemLen)...)
	infoEl := appendMaster(nil, idInfo, info)
	durAt += len(infoEl) - len(info)

	var tr []byte
	dimsAt := -1
	for _, t := range tracks {
		e, at := trackEntry(t)
		if at >= 0 {
			dimsAt = len(tr) + at
			m.videoTrack = t.number
			m.dimsPending = t.width <= 0 || t.height <= 0
		}
		tr = append(tr, e...)
	}
	tracksEl := appendMaster(nil, idTracks, tr)
	if dimsAt >= 0 {
		dimsAt += len(tracksEl) - len(tr)
	}

	// The SeekHead has a fixed size: two entries and a Void for Cues.
	seekHeadLen := int64(len(appendMaster(nil, idSeekHead, make([]byte, 3*seekEntrySize))))
	infoPos := seekHeadLen
	tracksPos := infoPos + int64(len(infoEl))
	var sh []byte
	sh = append(sh, seekEntry(idInfo, uint64(infoPos))...)
	sh = append(sh, seekEntry(idTracks, uint64(tracksPos))...)
	seekVoidAt := len(sh)
	sh = append(sh, voidElement(seekEntrySize)...)
	shEl := appendMaster(nil, idSeekHead, sh)
	if int64(len(shEl)) != seekHeadLen || len(sh) != 3*seekEntrySize {
		return errors.New("webm: internal SeekHead size mismatch")
	}

	m.seekVoidOff = m.segDataStart + int64(len(shEl)-len(sh)+seekVoidAt)
	m.durVoidOff = m.segDataStart + infoPos + int64(durAt)
	if dimsAt >= 0 {
		m.dimsOff = m.segDataStart + tracksPos + int64(dimsAt)
	}
	m.cueTrack = m.videoTrack
	if m.cueTrack == 0 && len(tracks) > 0 {
		m.cueTrack = tracks[0].number
	}

	hdr = append(hdr, shEl...)
	hdr = append(hdr, infoEl...)
	hdr = append(hdr, tracksEl...)
	return m.write(hdr)
}

// matroskaEpochUnix is the origin of DateUTC, 2001-01-01T00:00:00Z.
const matroskaEpochUnix = 978307200

// setVideoSize patches the placeholder frame size, once.
func (m *webmWriter) setVideoSize(w, h int) error {
	if !m.dimsPending || w <= 0 || h <= 0 {
		return nil
	}
	m.dimsPending = false
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], uint16(w))
	if _, err := m.w.WriteAt(b[:], m.dimsOff); err != nil {
		return err
	}
	binary.BigEndian.PutUint16(b[:], uint16(h))
	_, err := m.w.WriteAt(b[:], m.dimsOff+4)
	return err
}

// writeFrame adds one frame at ms (file time, milliseconds). Frames of a
// track must come in order; frames before the open cluster's start are
// moved to it. It returns the time the frame was written at.
func (m *webmWriter) writeFrame(track uint64, ms int64, key bool, data []byte) (int64, error) {
	if m.clusterOpen && ms < m.clusterTC {
		ms = m.clusterTC
	}
	videoKey := key && track == m.videoTrack
	if !m.clusterOpen || (videoKey && len(m.cluster) > 0) ||
		ms-m.clusterTC > maxClusterMs || len(m.cluster) > maxClusterBytes {
		if err := m.flushCluster(); err != nil {
			return ms, err
		}
		m.clusterOpen = true
		m.clusterTC = ms
		m.clusterCue = videoKey || (m.videoTrack == 0 && track == m.cueTrack)
	}
	m.cluster = appendSimpleBlock(m.cluster, track, int16(ms-m.clusterTC), key, data)
	return ms, nil
}

// flushCluster writes the open cluster, if any.
func (m *webmWriter) flushCluster() error {
	if !m.clusterOpen {
		return nil
	}
	m.clusterOpen = false
	if m.clusterCue {
		m.cues = append(m.cues, cuePoint{timeMs: m.clusterTC, track: m.cueTrack, position: m.off - m.segDataStart})
	}
	tc := appendUint(nil, idTimecode, uint64(m.clusterTC))
	hdr := appendID(nil, idCluster)
	hdr = appendSize(hdr, uint64(len(tc)+len(m.cluster)))
	hdr = append(hdr, tc...)
	err := m.write(append(hdr, m.cluster...))
	m.cluster = m.cluster[:0]
	if cap(m.cluster) > maxClusterBytes {
		m.cluster = nil
	}
	return err
}

// finish writes the last cluster and the Cues and patches the header.
func (m *webmWriter) finish(durationMs float64) error {
	if err := m.flushCluster(); err != nil {
		return err
	}
	if len(m.cues) > 0 {
		cuesPos := m.off - m.segDataStart
		var c []byte
		for _, cp := range m.cues {
			var tp []byte
			tp = appendUint(tp, idCueTrack, cp.track)
			tp = appendUint(tp, idCueClusterPos, uint64(cp.position))
			var p []byte
			p = appendUint(p, idCueTime, uint64(cp.timeMs))
			p = appendMaster(p, idCueTrackPositions, tp)
			c = appendMaster(c, idCuePoint, p)
		}
		if err := m.write(appendMaster(nil, idCues, c)); err != nil {
			return err
		}
		if err := m.patch(m.seekVoidOff, seekEntry(idCues, uint64(cuesPos))); err != nil {
			return err
		}
	}
	if durationMs < 1 {
		durationMs = 1
	}
	if err := m.patch(m.durVoidOff, appendFloat(nil, idDuration, durationMs)); err != nil {
		return err
	}
	return m.patch(m.segSizeOff, appendSizeN(nil, uint64(m.off-m.segDataStart), 8))
}

func (m *webmWriter) patch(off int64, b []byte) error {
	_, err := m.w.WriteAt(b, off)
	return err
}
