package sfu

import (
	"io"

	"github.com/pion/transport/v4/packetio"
)

// pion's SRTP and SRTCP read streams (one per SSRC each way: a
// PeerConnection has ~8) queue decrypted packets in a packetio.Buffer
// between the session's reader and ours. The buffer starts empty and
// doubles (1.25× past 128 KiB) whenever a packet does not fit, up to pion's
// limits of 1 MB (RTP) and 100 kB (RTCP); it never shrinks. So every
// stream keeps, for its lifetime, room for the longest backlog it ever had:
// under CPU contention (2-core machine at load 10) they held ~220 KiB per
// PeerConnection, the largest single item of a call's heap. Bounded
// buffers drop what does not fit instead (pion drops silently when a
// buffer is full; the NACK loop repairs video): streamBufferRTP holds
// ~90 full-size packets, 0.4 s at the prober's 2.5 Mbit/s ceiling and
// 0.8 s at 1.2 Mbit/s, long after the packets are too late to be useful;
// streamBufferRTCP ~250 typical compound packets.
const (
	streamBufferRTP  = 128 << 10
	streamBufferRTCP = 16 << 10
)

// newStreamBuffer is the SettingEngine's BufferFactory: a pion buffer
// with a bound per packet type.
func newStreamBuffer(t packetio.BufferPacketType, _ uint32) io.ReadWriteCloser {
	b := packetio.NewBuffer()
	if t == packetio.RTCPBufferPacket {
		b.SetLimitSize(streamBufferRTCP)
	} else {
		b.SetLimitSize(streamBufferRTP)
	}
	return b
}
