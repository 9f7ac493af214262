package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"videochat/cluster"
	"videochat/signaling"
)

// clusterCollector reads the cluster's and signaling's cross-node numbers
// at scrape time (registered only for a node with -redis-url).
type clusterCollector struct {
	stats func() cluster.Stats
	sig   func() signaling.Stats

	nodes, up, relayed, dropped, commands, errors, seconds, calls, resumed *prometheus.Desc
}

func newClusterCollector(stats func() cluster.Stats, sig func() signaling.Stats) *clusterCollector {
	return &clusterCollector{stats: stats, sig: sig,
		nodes:    desc("cluster_nodes", "Live nodes this node sees in the cluster, itself included."),
		up:       desc("cluster_redis_up", "1 if Redis answered this node's heartbeat within the TTL, else 0 (the node then sees only its own users)."),
		relayed:  desc("cluster_relayed_messages_total", "Signaling messages relayed between nodes through Redis: out (published to other nodes), in (delivered from them).", "direction"),
		dropped:  desc("cluster_relay_dropped_total", "Relayed messages not sent: Redis unreachable, queue full or publish failed."),
		commands: desc("cluster_redis_commands_total", "Round trips to Redis (a pipeline counts once)."),
		errors:   desc("cluster_redis_errors_total", "Round trips to Redis that failed."),
		seconds:  desc("cluster_redis_seconds_total", "Time spent in round trips to Redis, the relay stream's blocking reads (which wait for news) left out."),
		calls:    desc("cluster_calls", "Cross-node calls: hosted (hosted here, with a participant on another node), remote (users of this node in calls hosted on another).", "role"),
		resumed:  desc("cluster_resumed_sessions", "Sessions resumed across nodes: here (connections here whose session is on another node), elsewhere (sessions here whose connection is on another node).", "where"),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.nodes, c.up, c.relayed, c.dropped, c.commands, c.errors, c.seconds, c.calls, c.resumed} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	up := 0.0
	if s.Up {
		up = 1
	}
	gauge(c.nodes, float64(s.Nodes))
	gauge(c.up, up)
	counter(c.relayed, float64(s.Sent), "out")
	counter(c.relayed, float64(s.Received), "in")
	counter(c.dropped, float64(s.Dropped))
	counter(c.commands, float64(s.Commands))
	counter(c.errors, float64(s.Errors))
	counter(c.seconds, s.Duration.Seconds())
	if c.sig != nil {
		g := c.sig()
		gauge(c.calls, float64(g.HostedCrossNode), "hosted")
		gauge(c.calls, float64(g.RemoteParticipants), "remote")
		gauge(c.resumed, float64(g.ResumedHere), "here")
		gauge(c.resumed, float64(g.ResumedElsewhere), "elsewhere")
	}
}
