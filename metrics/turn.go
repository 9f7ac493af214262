package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"videochat/turn"
)

// turnCollector reads the embedded TURN server's Stats at scrape time.
type turnCollector struct {
	stats func() turn.Stats

	allocs, allocsTotal, bytes, packets, denied *prometheus.Desc
}

func newTURNCollector(stats func() turn.Stats) *turnCollector {
	return &turnCollector{stats: stats,
		allocs:      desc("turn_allocations", "Active TURN allocations (relays)."),
		allocsTotal: desc("turn_allocations_total", "TURN relay sockets allocated since the start."),
		bytes:       desc("turn_relayed_bytes_total", "Payload bytes relayed by TURN: to_peer (sent by clients), from_peer (sent to clients).", "direction"),
		packets:     desc("turn_relayed_packets_total", "Packets relayed by TURN, by direction.", "direction"),
		denied:      desc("turn_denied_packets_total", "Relay packets dropped because the peer is not allowed (only the SFU is)."),
	}
}

func (c *turnCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.allocs, c.allocsTotal, c.bytes, c.packets, c.denied} {
		ch <- d
	}
}

func (c *turnCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	ch <- prometheus.MustNewConstMetric(c.allocs, prometheus.GaugeValue, float64(s.Allocations))
	counter(c.allocsTotal, s.AllocationsTotal)
	counter(c.bytes, s.ToPeerBytes, "to_peer")
	counter(c.bytes, s.FromPeerBytes, "from_peer")
	counter(c.packets, s.ToPeerPackets, "to_peer")
	counter(c.packets, s.FromPeerPackets, "from_peer")
	counter(c.denied, s.Denied)
}
