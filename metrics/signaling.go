package metrics

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"videochat/signaling"
)

// signalingCollector reads the signaling's Stats at scrape time.
type signalingCollector struct {
	stats func() signaling.Stats

	conns, users, active, ringing, started, ended, msgs, errs *prometheus.Desc
}

func newSignalingCollector(stats func() signaling.Stats) *signalingCollector {
	return &signalingCollector{stats: stats,
		conns:   desc("websocket_connections", "Open WebSocket connections."),
		users:   desc("users_online", "Logged-in users (including sessions held for a resume)."),
		active:  desc("active_calls", "Calls the callee has accepted and that have not ended."),
		ringing: desc("ringing_calls", "Calls ringing: started, not yet accepted."),
		started: desc("calls_started_total", "Calls started (a caller's offer to someone online and free)."),
		ended:   desc("calls_ended_total", "Calls ended, by the leave reason.", "reason"),
		msgs:    desc("websocket_messages_total", "WebSocket messages, by direction (in: received from clients; out: queued for them) and type (other: unknown or unparseable).", "direction", "type"),
		errs:    desc("websocket_errors_total", "Client errors and refusals, by kind.", "kind"),
	}
}

func (c *signalingCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.conns, c.users, c.active, c.ringing, c.started, c.ended, c.msgs, c.errs} {
		ch <- d
	}
}

// label turns a leave reason ("no answer") into a label value ("no_answer").
func label(s string) string { return strings.ReplaceAll(s, " ", "_") }

func (c *signalingCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.conns, s.Connections)
	gauge(c.users, s.UsersOnline)
	gauge(c.active, s.CallsActive)
	gauge(c.ringing, s.CallsRinging)
	counter(c.started, s.CallsStarted)
	for r, v := range s.CallsEnded {
		counter(c.ended, v, label(r))
	}
	for t, v := range s.MessagesIn {
		counter(c.msgs, v, "in", t)
	}
	for t, v := range s.MessagesOut {
		counter(c.msgs, v, "out", t)
	}
	for k, v := range s.Errors {
		counter(c.errs, v, k)
	}
}
