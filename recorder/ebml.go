package recorder

import (
	"encoding/binary"
	"math"
)

// Matroska / WebM element IDs (with their length-marker bits, as written).
const (
	idEBML               = 0x1A45DFA3
	idEBMLVersion        = 0x4286
	idEBMLReadVersion    = 0x42F7
	idEBMLMaxIDLength    = 0x42F2
	idEBMLMaxSizeLength  = 0x42F3
	idDocType            = 0x4282
	idDocTypeVersion     = 0x4287
	idDocTypeReadVersion = 0x4285

	idSegment      = 0x18538067
	idSeekHead     = 0x114D9B74
	idSeek         = 0x4DBB
	idSeekID       = 0x53AB
	idSeekPosition = 0x53AC
	idVoid         = 0xEC

	idInfo          = 0x1549A966
	idTimecodeScale = 0x2AD7B1
	idMuxingApp     = 0x4D80
	idWritingApp    = 0x5741
	idDuration      = 0x4489
	idDateUTC       = 0x4461

	idTracks       = 0x1654AE6B
	idTrackEntry   = 0xAE
	idTrackNumber  = 0xD7
	idTrackUID     = 0x73C5
	idTrackType    = 0x83
	idFlagLacing   = 0x9C
	idCodecID      = 0x86
	idCodecPrivate = 0x63A2
	idCodecDelay   = 0x56AA
	idSeekPreRoll  = 0x56BB
	idVideo        = 0xE0
	idPixelWidth   = 0xB0
	idPixelHeight  = 0xBA
	idAudio        = 0xE1
	idSamplingFreq = 0xB5
	idChannels     = 0x9F

	idCluster     = 0x1F43B675
	idTimecode    = 0xE7
	idSimpleBlock = 0xA3

	idCues              = 0x1C53BB6B
	idCuePoint          = 0xBB
	idCueTime           = 0xB3
	idCueTrackPositions = 0xB7
	idCueTrack          = 0xF7
	idCueClusterPos     = 0xF1
)

// appendID appends an element ID in its 1–4 byte form.
func appendID(b []byte, id uint32) []byte {
	switch {
	case id >= 1<<24:
		return append(b, byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
	case id >= 1<<16:
		return append(b, byte(id>>16), byte(id>>8), byte(id))
	case id >= 1<<8:
		return append(b, byte(id>>8), byte(id))
	default:
		return append(b, byte(id))
	}
}

// appendSize appends n as the shortest EBML variable-length size. The
// all-ones pattern of each length means "unknown" and is avoided.
func appendSize(b []byte, n uint64) []byte {
	l := 1
	for l < 8 && n >= (uint64(1)<<(7*l))-1 {
		l++
	}
	return appendSizeN(b, n, l)
}

// appendSizeN appends n as an EBML size of exactly l bytes (1..8).
func appendSizeN(b []byte, n uint64, l int) []byte {
	v := n | uint64(1)<<(7*l)
	for i := l - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

// appendUintN appends an unsigned integer element whose value takes
// exactly n bytes, so it can be patched in place later.
func appendUintN(b []byte, id uint32, v uint64, n int) []byte {
	b = appendID(b, id)
	b = appendSizeN(b, uint64(n), 1)
	for i := n - 1; i >= 0; i-- {
		b = append(b, byte(v>>(8*i)))
	}
	return b
}

// appendUint appends an unsigned integer element in its shortest form.
func appendUint(b []byte, id uint32, v uint64) []byte {
	n := 1
	for n < 8 && v >= uint64(1)<<(8*n) {
		n++
	}
	return appendUintN(b, id, v, n)
}

func appendFloat(b []byte, id uint32, f float64) []byte {
	b = appendID(b, id)
	b = appendSizeN(b, 8, 1)
	return binary.BigEndian.AppendUint64(b, math.Float64bits(f))
}

func appendBytes(b []byte, id uint32, data []byte) []byte {
	b = appendID(b, id)
	b = appendSize(b, uint64(len(data)))
	return append(b, data...)
}

func appendString(b []byte, id uint32, s string) []byte {
	return appendBytes(b, id, []byte(s))
}

// appendMaster appends a master element around already encoded children.
func appendMaster(b []byte, id uint32, children []byte) []byte {
	return appendBytes(b, id, children)
}

// voidElement returns a Void element of exactly n bytes (2 <= n <= 128).
func voidElement(n int) []byte {
	b := []byte{idVoid}
	b = appendSizeN(b, uint64(n-2), 1)
	return append(b, make([]byte, n-2)...)
}

// appendSimpleBlock appends a SimpleBlock of one frame, no lacing.
func appendSimpleBlock(b []byte, track uint64, rel int16, key bool, data []byte) []byte {
	b = appendID(b, idSimpleBlock)
	hdr := appendSize(nil, track)
	b = appendSize(b, uint64(len(hdr)+3+len(data)))
	b = append(b, hdr...)
	b = binary.BigEndian.AppendUint16(b, uint16(rel))
	var flags byte
	if key {
		flags = 0x80
	}
	b = append(b, flags)
	return append(b, data...)
}
