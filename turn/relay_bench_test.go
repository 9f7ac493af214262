package turn

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchEcho sends b.N 1200-byte packets to an echo peer through conn and
// waits for each echo, reporting the process CPU per round trip.
func benchEcho(b *testing.B, conn net.PacketConn, peer net.Addr) {
	pkt := make([]byte, 1200)
	buf := make([]byte, 1500)
	b.SetBytes(int64(2 * len(pkt)))
	b.ReportAllocs()
	start := cpuTime()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := conn.WriteTo(pkt, peer); err != nil {
			b.Fatal(err)
		}
		_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := conn.ReadFrom(buf); err != nil {
			b.Fatalf("round trip %d: %v", i, err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/roundtrip")
}

// BenchmarkRoundTrip compares a UDP round trip to a peer sent directly with
// one relayed through the embedded TURN server (each round trip is two
// relayed packets). The difference in cpu-ns is the relay's cost.
func BenchmarkRoundTrip(b *testing.B) {
	e := startEcho(b)
	b.Run("direct", func(b *testing.B) {
		conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		defer conn.Close()
		benchEcho(b, conn, e.udpAddr())
	})
	b.Run("turn-udp", func(b *testing.B) {
		srv := startServer(b, []netip.AddrPort{e.addrPort()}, nil)
		user, pass := Credentials(testSecret, "bench", time.Hour, time.Now())
		relay := allocate(b, udpClient(b, srv, user, pass))
		benchEcho(b, relay, e.udpAddr())
	})
}
