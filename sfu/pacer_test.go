package sfu

import (
	"net"
	"sync"
	"testing"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"

	"videochat/internal/gcc"
)

// udpWriter is the bottom of a write path: one sendto per packet.
type udpWriter struct{ c *net.UDPConn }

func (w udpWriter) Write(_ *rtp.Header, payload []byte, _ interceptor.Attributes) (int, error) {
	return w.c.Write(payload)
}

// BenchmarkPacer writes one subscriber's audio and video from two
// goroutines (as the SFU's two upTrack loops do) through the pacer into a
// real UDP socket: NoOpPacer holds its lock across sendto, directPacer
// does not.
func BenchmarkPacer(b *testing.B) {
	for _, tc := range []struct {
		name string
		p    gcc.Pacer
	}{{"noop", gcc.NewNoOpPacer()}, {"direct", newDirectPacer()}} {
		b.Run(tc.name, func(b *testing.B) {
			sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				b.Fatal(err)
			}
			defer sink.Close()
			var conns []*net.UDPConn
			for ssrc := uint32(1); ssrc <= 2; ssrc++ {
				c, err := net.DialUDP("udp4", nil, sink.LocalAddr().(*net.UDPAddr))
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				conns = append(conns, c)
				tc.p.AddStream(ssrc, udpWriter{c})
			}
			payload := make([]byte, 1200)
			b.ResetTimer()
			var wg sync.WaitGroup
			for ssrc := uint32(1); ssrc <= 2; ssrc++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					h := &rtp.Header{SSRC: ssrc}
					for i := 0; i < b.N; i++ {
						_, _ = tc.p.Write(h, payload, nil)
					}
				}()
			}
			wg.Wait()
		})
	}
}

func TestDirectPacerUnknownStream(t *testing.T) {
	p := newDirectPacer()
	if _, err := p.Write(&rtp.Header{SSRC: 9}, nil, nil); err == nil {
		t.Fatal("write to an unknown SSRC succeeded")
	}
}
