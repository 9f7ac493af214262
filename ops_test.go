package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"videochat/internal/rtctest"
)

// scrape fetches url and parses the Prometheus text format.
func scrape(t *testing.T, url string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %s: %s", url, resp.Status, b)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mfs
}

// metricValue sums the series of name whose labels include want (pairs
// of name, value): counter and gauge values, histogram sample counts.
func metricValue(mfs map[string]*dto.MetricFamily, name string, want ...string) float64 {
	mf := mfs[name]
	if mf == nil {
		return -1
	}
	sum := 0.0
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(want); i += 2 {
			match = match && labels[want[i]] == want[i+1]
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum
}

// waitMetrics scrapes until cond holds (or fails after d) and returns the
// last scrape.
func waitMetrics(t *testing.T, url string, d time.Duration, cond func(map[string]*dto.MetricFamily) bool, what string) map[string]*dto.MetricFamily {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		mfs := scrape(t, url)
		if cond(mfs) {
			return mfs
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics: %s not seen within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestMetricsDuringCall scrapes /metrics while two pion clients are in a
// call sending RTP, and after the hang-up.
func TestMetricsDuringCall(t *testing.T) {
	app := startApp(t, func(c *Config) {
		c.TURNAddr, c.TURNSecret = "127.0.0.1:0", "s3cret" // the self-test relays through it
		c.bitrateSample = 50 * time.Millisecond
	})
	url := app.MetricsURL()
	mfs := scrape(t, url)
	if v := metricValue(mfs, "videochat_active_calls"); v != 0 {
		t.Fatalf("active calls before any call: %v", v)
	}
	for _, name := range []string{"go_goroutines", "videochat_process_open_fds", "videochat_calls_ended_total",
		"videochat_websocket_errors_total", "videochat_turn_allocations", "videochat_call_setup_seconds"} {
		if mfs[name] == nil {
			t.Errorf("no %s", name)
		}
	}

	alice, bob := establish(t, app, rtctest.Options{})
	defer alice.StartSending()()
	defer bob.StartSending()()
	for _, p := range []*wsPeer{alice, bob} {
		if err := p.WaitPackets(webrtc.RTPCodecTypeVideo, 50, 10*time.Second); err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
	}
	mfs = waitMetrics(t, url, 10*time.Second, func(m map[string]*dto.MetricFamily) bool {
		return metricValue(m, "videochat_call_setup_seconds", "leg", "caller") >= 1 &&
			metricValue(m, "videochat_call_setup_seconds", "leg", "callee") >= 1 &&
			metricValue(m, "videochat_estimated_bitrate_bps") >= 1
	}, "a setup time for both legs and a bitrate sample")
	checks := []struct {
		name   string
		labels []string
		min    float64
		max    float64
	}{
		{"videochat_active_calls", nil, 1, 1},
		{"videochat_ringing_calls", nil, 0, 0},
		{"videochat_users_online", nil, 2, 2},
		{"videochat_websocket_connections", nil, 2, 2},
		{"videochat_sfu_participants", nil, 2, 2},
		{"videochat_calls_started_total", nil, 1, 1},
		{"videochat_forwarded_packets_total", nil, 100, 1e12},
		{"videochat_forwarded_bytes_total", nil, 1000, 1e15},
		{"videochat_received_packets_total", nil, 100, 1e12},
		{"videochat_websocket_messages_total", []string{"direction", "in", "type", "offer"}, 1, 1e6},
		{"videochat_websocket_messages_total", []string{"direction", "out", "type", "accepted"}, 1, 1},
	}
	for _, c := range checks {
		if v := metricValue(mfs, c.name, c.labels...); v < c.min || v > c.max {
			t.Errorf("%s%v = %v, want %v..%v", c.name, c.labels, v, c.min, c.max)
		}
	}
	h := mfs["videochat_call_setup_seconds"]
	for _, m := range h.GetMetric() {
		t.Logf("setup %v: %d observations, sum %.3f s", m.GetLabel()[0].GetValue(), m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum())
	}
	// The self-test's relayed probes went through the embedded TURN server.
	waitMetrics(t, url, 20*time.Second, func(m map[string]*dto.MetricFamily) bool {
		return metricValue(m, "videochat_turn_allocations_total") >= 2 &&
			metricValue(m, "videochat_turn_relayed_bytes_total", "direction", "to_peer") > 0
	}, "TURN allocations and relayed bytes from the self-test")

	// A PLI and the hang-up.
	if err := bob.SendPLI(); err != nil {
		t.Fatal(err)
	}
	before := scrape(t, url)
	alice.send(signalingLeave("bob"))
	if m := bob.expect("leave"); m.Reason != "hangup" {
		t.Fatalf("leave %+v", m)
	}
	after := waitMetrics(t, url, 10*time.Second, func(m map[string]*dto.MetricFamily) bool {
		return metricValue(m, "videochat_sfu_participants") == 0
	}, "the participants gone")
	if v := metricValue(after, "videochat_calls_ended_total", "reason", "hangup"); v != 1 {
		t.Errorf("calls ended by hangup: %v, want 1", v)
	}
	if v := metricValue(after, "videochat_active_calls"); v != 0 {
		t.Errorf("active calls after the hang-up: %v", v)
	}
	// Counters never go down when a call's participants leave: their
	// numbers move into the SFU's totals.
	for _, name := range []string{"videochat_forwarded_packets_total", "videochat_forwarded_bytes_total",
		"videochat_received_packets_total", "videochat_plis_total"} {
		if b, a := metricValue(before, name), metricValue(after, name); a < b {
			t.Errorf("%s went down after the hang-up: %v -> %v", name, b, a)
		}
	}
	if v := metricValue(after, "videochat_plis_total", "direction", "from_subscribers"); v < 1 {
		t.Errorf("PLIs from subscribers: %v", v)
	}
}

// TestMetricsOnlyForThisHost: on the main port /metrics answers loopback
// clients only, never a request relayed by an untrusted proxy; with
// -metrics-addr it is served there and not on the main port.
func TestMetricsOnlyForThisHost(t *testing.T) {
	app := startApp(t, func(c *Config) {
		c.Limits.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	get := func(url string, header ...string) int {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	url := app.URL() + "metrics"
	cases := []struct {
		header []string
		want   int
	}{
		{nil, 200},
		{[]string{"X-Forwarded-For", "203.0.113.7"}, 403},            // a visitor through the local proxy
		{[]string{"X-Forwarded-For", "127.0.0.1"}, 200},              // a trusted proxy says: local
		{[]string{"X-Forwarded-For", "203.0.113.7, 127.0.0.1"}, 403}, // any outside hop
		{[]string{"Forwarded", "for=203.0.113.7"}, 403},
	}
	for _, c := range cases {
		if got := get(url, c.header...); got != c.want {
			t.Errorf("GET /metrics %v: %d, want %d", c.header, got, c.want)
		}
	}
	// Without the proxy trusted, any forwarding header is refused.
	untrusting := &App{}
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	req.RemoteAddr = "127.0.0.1:5000"
	req.Header.Set("X-Forwarded-For", "127.0.0.1")
	if untrusting.fromThisHost(req) {
		t.Error("forwarded by an untrusted proxy: served")
	}
	req.RemoteAddr = "[fd00::2]:5000"
	req.Header.Del("X-Forwarded-For")
	if untrusting.fromThisHost(req) {
		t.Error("a non-loopback client: served")
	}

	sep := startApp(t, func(c *Config) { c.MetricsAddr = "127.0.0.1:0" })
	if got := get(sep.URL() + "metrics"); got != http.StatusNotFound {
		t.Errorf("main port /metrics with -metrics-addr: %d, want 404", got)
	}
	if got := get(sep.MetricsURL()); got != 200 {
		t.Errorf("-metrics-addr /metrics: %d", got)
	}
	if got := get(strings.TrimSuffix(sep.MetricsURL(), "metrics") + "readyz"); got != 200 {
		t.Errorf("-metrics-addr /readyz: %d", got)
	}
}

func readyz(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Status string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body.Status
}

// TestReadyz: 503 before Serve, 200 while serving, 503 from the start of
// the shutdown (kept for -shutdown-delay while everything still works).
func TestReadyz(t *testing.T) {
	idle, err := NewApp(Config{Addr: "127.0.0.1:0", IncludeLoopback: true}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	idle.readyz(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("before Serve: %d", rec.Code)
	}
	if err := idle.Close(context.Background()); err != nil {
		t.Fatal(err)
	}

	app := startApp(t, func(c *Config) { c.ShutdownDelay = 2 * time.Second })
	url := app.URL() + "readyz"
	if code, status := readyz(t, url); code != 200 || status != "ready" {
		t.Fatalf("serving: %d %q", code, status)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	closed := make(chan error, 1)
	start := time.Now()
	go func() { closed <- app.Close(ctx) }()
	deadline := time.Now().Add(2 * time.Second)
	for {
		code, status := readyz(t, url)
		if code == http.StatusServiceUnavailable && status == "shutting down" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %d %q during the shutdown", code, status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Still serving the app itself while draining: a user can log in.
	p := dialPeer(t, wsURLOf(app.URL(), "/ws"), "late", rtctest.Options{})
	_ = p
	if err := <-closed; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 2*time.Second {
		t.Errorf("Close took %v, less than -shutdown-delay", took)
	}
}

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestJSONLogsCarryCallIDs: with -log-format json every line is a JSON
// object, and every line about a call carries the call's id (and, for a
// participant's PeerConnection, the participant).
func TestJSONLogsCarryCallIDs(t *testing.T) {
	var out syncBuffer
	cfg := Config{Addr: "127.0.0.1:0", IncludeLoopback: true, LogFormat: "json", LogLevel: slog.LevelDebug}
	app, err := NewApp(cfg, newLogger(cfg, &out))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- app.Serve() }()
	alice, bob := establish(t, app, rtctest.Options{})
	stop := alice.StartSending()
	if err := bob.WaitPackets(webrtc.RTPCodecTypeVideo, 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	stop()
	alice.send(signalingLeave("bob"))
	bob.expect("leave")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := app.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}

	// Lines about the call, and whether they name a participant.
	aboutCall := map[string]bool{"call": false, "call accepted": false, "call ended": false,
		"media connected": true, "participant joined": true, "peer connection state": true, "track started": true}
	var callID string
	seen := map[string]int{}
	for i, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i+1, err, line)
		}
		msg, _ := rec["msg"].(string)
		if rec["time"] == nil || rec["level"] == nil || msg == "" {
			t.Fatalf("line %d lacks time, level or msg: %s", i+1, line)
		}
		wantPart, ok := aboutCall[msg]
		if !ok {
			continue
		}
		id, _ := rec["call"].(string)
		if id == "" {
			t.Errorf("line about the call without its id: %s", line)
			continue
		}
		if callID == "" {
			callID = id
		} else if id != callID {
			t.Errorf("call id %q, earlier %q: %s", id, callID, line)
		}
		if part, _ := rec["participant"].(string); wantPart && part != "alice" && part != "bob" {
			t.Errorf("line about a participant without its name: %s", line)
		}
		seen[msg]++
	}
	for msg := range aboutCall {
		if seen[msg] == 0 {
			t.Errorf("no %q line", msg)
		}
	}
	t.Logf("call %s: %v", callID, seen)
}

func TestConfigOperatingFlags(t *testing.T) {
	cfg, err := parseWith([]string{"-log-format", "json", "-metrics-addr", "127.0.0.1:9091"},
		map[string]string{"VIDEOCHAT_SHUTDOWN_DELAY": "5s"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LogFormat != "json" || cfg.MetricsAddr != "127.0.0.1:9091" || cfg.ShutdownDelay != 5*time.Second {
		t.Errorf("parsed %q %q %v", cfg.LogFormat, cfg.MetricsAddr, cfg.ShutdownDelay)
	}
	if def, _ := parseWith(nil, nil); def.LogFormat != "text" || def.MetricsAddr != "" || def.ShutdownDelay != 0 {
		t.Errorf("defaults %q %q %v", def.LogFormat, def.MetricsAddr, def.ShutdownDelay)
	}
	for _, args := range [][]string{{"-log-format", "yaml"}, {"-shutdown-delay", "-1s"}} {
		if _, err := parseWith(args, nil); err == nil {
			t.Errorf("%v: no error", args)
		}
	}
	// A JSON logger writes JSON, a text logger key=value.
	var b bytes.Buffer
	newLogger(Config{LogFormat: "json"}, &b).Info("hello", "call", "c1")
	var rec map[string]any
	if err := json.Unmarshal(b.Bytes(), &rec); err != nil || rec["call"] != "c1" {
		t.Errorf("json line %q: %v", b.String(), err)
	}
	b.Reset()
	newLogger(Config{}, &b).Info("hello", "call", "c1")
	if !strings.Contains(b.String(), "call=c1") {
		t.Errorf("text line %q", b.String())
	}
}
