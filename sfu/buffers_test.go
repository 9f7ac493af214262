package sfu

import (
	"errors"
	"testing"

	"github.com/pion/transport/v4/packetio"
)

// A stream buffer whose reader lags takes packets up to its bound and then
// refuses them (pion's SRTP session drops on ErrFull) instead of growing;
// once read, it takes packets again, without having grown.
func TestStreamBufferBounded(t *testing.T) {
	for _, c := range []struct {
		typ   packetio.BufferPacketType
		limit int
		size  int
	}{
		{packetio.RTPBufferPacket, streamBufferRTP, 1200},
		{packetio.RTCPBufferPacket, streamBufferRTCP, 80},
	} {
		b := newStreamBuffer(c.typ, 1234)
		pkt := make([]byte, c.size)
		held := 0
		var err error
		for range 10 * c.limit / c.size {
			if _, err = b.Write(pkt); err != nil {
				break
			}
			held += c.size + 2 // two bytes of length per packet
		}
		if !errors.Is(err, packetio.ErrFull) {
			t.Fatalf("type %d: after %d bytes: %v, want ErrFull", c.typ, held, err)
		}
		if held > c.limit || held < c.limit-c.size-2 {
			t.Errorf("type %d: held %d bytes, want the %d-byte bound", c.typ, held, c.limit)
		}
		buf := make([]byte, 1500)
		for range 3 {
			if _, err := b.Read(buf); err != nil {
				t.Fatal(err)
			}
		}
		for range 3 {
			if _, err := b.Write(pkt); err != nil {
				t.Fatalf("type %d: write after reading: %v", c.typ, err)
			}
		}
		if _, err := b.Write(pkt); !errors.Is(err, packetio.ErrFull) {
			t.Errorf("type %d: fourth write after three reads: %v, want ErrFull", c.typ, err)
		}
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
