package sfu

import (
	"net/netip"
	"testing"
	"time"

	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/srtp/v3"
)

// BenchmarkFastPath measures the receive fast path's work per packet as
// the media socket's reader does it (rxfast.go): classify, look the
// address and SSRC up, decrypt in place, record the arrival, forward to
// one subscriber (the same work as BenchmarkForward/video after the
// decryption). Video packets of 1,100-byte payloads, as
// BenchmarkForward's. Each iteration copies the packet into the read
// buffer first (decryption is in place; the socket read copies too). The
// 512 packets (in the cache, as a socket's freshly read buffer is) are
// replayed: between laps, with the timer stopped, the receiving SRTP
// context, the upTrack and its subscriber are replaced.
func BenchmarkFastPath(b *testing.B) {
	for _, prof := range []srtp.ProtectionProfile{srtp.ProtectionProfileAes128CmHmacSha1_80, srtp.ProtectionProfileAeadAes128Gcm} {
		b.Run(prof.String(), func(b *testing.B) { benchFastPath(b, prof) })
	}
}

func benchFastPath(b *testing.B, prof srtp.ProtectionProfile) {
	w := &countingWriter{}
	f := newFastFixture(b, prof, w)
	f.up.nack = newNackTracker(nackInterval, nackMaxPerPacket)
	tw := &twccFeedback{start: time.Now(), rec: twcc.NewRecorder(1)}
	tw.extID.Store(3)
	f.peer.twcc = tw
	from := netip.MustParseAddrPort("10.0.0.1:5000")
	if err := f.peer.register(from); err != nil {
		b.Fatal(err)
	}
	const laps = 512
	pkts := make([][]byte, laps)
	for i := range pkts {
		pkts[i] = f.seal(b, fastSSRC, ptVP8, uint16(i), fastPayload(uint16(i), 1100))
	}
	buf, scratch := make([]byte, 8192), make([]byte, maxPacket)
	b.ReportAllocs()
	b.SetBytes(int64(len(pkts[0])))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%laps == 0 && i > 0 {
			b.StopTimer()
			f.newReceiveContext(b)
			f.newTrack(w)
			f.up.nack = newNackTracker(nackInterval, nackMaxPerPacket)
			b.StartTimer()
		}
		pkt := pkts[i%laps]
		n := copy(buf, pkt)
		if v, _ := f.tab.handle(buf[:n], from, scratch, nil); v != taken {
			b.Fatal("not taken")
		}
	}
	b.StopTimer()
	if got := f.tab.snapshot().Fast; got != uint64(b.N) {
		b.Fatalf("fast %d of %d (%+v)", got, b.N, f.tab.snapshot())
	}
	if w.packets != b.N {
		b.Fatalf("forwarded %d of %d", w.packets, b.N)
	}
}
