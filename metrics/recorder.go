package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"videochat/recorder"
)

// recorderCollector reads the recorder's Stats at scrape time.
type recorderCollector struct {
	stats func() recorder.Stats

	active, finished, failed, hookFailed *prometheus.Desc
}

func newRecorderCollector(stats func() recorder.Stats) *recorderCollector {
	return &recorderCollector{stats: stats,
		active:     desc("recordings_active", "Recordings under way (one file per participant per call)."),
		finished:   desc("recordings_finished_total", "Recordings completed and closed."),
		failed:     desc("recordings_failed_total", "Recordings stopped by an error (disk full, write error)."),
		hookFailed: desc("recording_on_finish_failures_total", "-record-on-finish runs that failed, timed out or were killed."),
	}
}

func (c *recorderCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.active, c.finished, c.failed, c.hookFailed} {
		ch <- d
	}
}

func (c *recorderCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(s.Active))
	ch <- prometheus.MustNewConstMetric(c.finished, prometheus.CounterValue, float64(s.Finished))
	ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(s.Failed))
	ch <- prometheus.MustNewConstMetric(c.hookFailed, prometheus.CounterValue, float64(s.OnFinishFailed))
}
