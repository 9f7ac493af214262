// Package metrics exposes the server's numbers to Prometheus. It is the
// only package that imports the Prometheus client: the SFU, signaling, TURN
// and recorder keep their own counters (atomics on their paths, snapshots
// on request) and the collectors here read them at scrape time, so the
// forwarding path stays free of metric updates and allocations. Histograms
// are fed by callbacks (call setup) or by a sampler (bandwidth estimates).
//
// Every Metrics has its own registry (no global DefaultRegisterer), so
// several servers can run in one process.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"videochat/cluster"
	"videochat/recorder"
	"videochat/sfu"
	"videochat/signaling"
	"videochat/turn"
)

const namespace = "videochat"

// Sources are the parts whose numbers are exported. Nil ones are left out
// (no TURN series without the embedded TURN server, no recording series
// without a recorder).
type Sources struct {
	SFUTotals func() sfu.Totals
	SFULoad   func() sfu.Load
	// SFUReaders: RTP taken by each media socket reader (optional).
	SFUReaders func() []uint64
	Signaling  func() signaling.Stats
	TURN       func() turn.Stats
	Recorder   func() recorder.Stats
	Cluster    func() cluster.Stats // a node with -redis-url
}

// Metrics is one server's registry with its collectors.
type Metrics struct {
	reg     *prometheus.Registry
	src     Sources
	setup   *prometheus.HistogramVec
	bitrate prometheus.Histogram
}

// Setup-time buckets (seconds): ICE+DTLS on loopback take ~0.1-0.3 s; a
// relayed or lossy setup a few seconds; the connect timeout is 30 s.
var setupBuckets = []float64{0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30}

// Bitrate buckets (bit/s): from the estimator's floor to well above HD video.
var bitrateBuckets = []float64{50e3, 100e3, 200e3, 300e3, 500e3, 750e3, 1e6, 1.5e6, 2e6, 3e6, 5e6, 10e6}

// New builds the registry: the collectors of src, Go runtime, process and
// build information.
func New(src Sources) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry(), src: src}
	m.setup = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: namespace, Name: "call_setup_seconds",
		Help:    "Time from a participant's offer (leg=caller) or answer (leg=callee) to its media connected (ICE and DTLS done).",
		Buckets: setupBuckets,
	}, []string{"leg"})
	m.bitrate = prometheus.NewHistogram(prometheus.HistogramOpts{
		Namespace: namespace, Name: "estimated_bitrate_bps",
		Help:    "Downlink bandwidth estimates of the participants in calls (bit/s), one observation per participant per sampling interval.",
		Buckets: bitrateBuckets,
	})
	m.reg.MustRegister(m.setup, m.bitrate,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{Namespace: namespace}),
		collectors.NewBuildInfoCollector())
	if src.SFUTotals != nil && src.SFULoad != nil {
		c := newSFUCollector(src.SFUTotals, src.SFULoad)
		c.readers = src.SFUReaders
		m.reg.MustRegister(c)
	}
	if src.Signaling != nil {
		m.reg.MustRegister(newSignalingCollector(src.Signaling))
	}
	if src.TURN != nil {
		m.reg.MustRegister(newTURNCollector(src.TURN))
	}
	if src.Recorder != nil {
		m.reg.MustRegister(newRecorderCollector(src.Recorder))
	}
	if src.Cluster != nil {
		m.reg.MustRegister(newClusterCollector(src.Cluster, src.Signaling))
	}
	for _, leg := range []string{"caller", "callee"} {
		m.setup.WithLabelValues(leg) // both series exist from the start
	}
	return m
}

// Registry returns the registry (tests gather from it).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus text (or OpenMetrics) format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		Registry:            m.reg, // counts its own scrape errors
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// ObserveSetup records one participant's media setup time (signaling's
// OnMediaConnected).
func (m *Metrics) ObserveSetup(leg string, d time.Duration) {
	m.setup.WithLabelValues(leg).Observe(d.Seconds())
}

// Sample observes every current bandwidth estimate once.
func (m *Metrics) Sample() {
	if m.src.SFULoad == nil {
		return
	}
	for _, b := range m.src.SFULoad().EstimatedBitrates {
		m.bitrate.Observe(float64(b))
	}
}

// DefaultSampleInterval is how often Run samples the bandwidth estimates.
const DefaultSampleInterval = 10 * time.Second

// Run samples the bandwidth estimates every interval until ctx ends.
func (m *Metrics) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = DefaultSampleInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			m.Sample()
		}
	}
}
