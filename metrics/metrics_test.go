package metrics

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"videochat/recorder"
	"videochat/sfu"
	"videochat/signaling"
	"videochat/turn"
)

// lint fails on any naming or help problem promlint finds.
func lint(t *testing.T, c prometheus.Collector) {
	t.Helper()
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

func TestSFUCollector(t *testing.T) {
	tot := sfu.Totals{ReceivedPackets: 10, ReceivedBytes: 1000, ForwardedPackets: 20, ForwardedBytes: 2000,
		Lost: 1, Recovered: 2, Duplicates: 3, NACKsSent: 4, NACKsReceived: 5, PLIsSent: 6, PLIsReceived: 7,
		Retransmissions: 8, PaddingPackets: 9, WriteErrors: 11, RecordDropped: 12, ResendsTooSoon: 20, ResendsOverRate: 21,
		ReceivePath: sfu.ReceivePathStats{Fast: 13, Fallback: 14, AuthFailures: 15, Released: 16, Overflow: 17, RTCP: 24, RTCPFailures: 2},
		SendPath:    sfu.SendPathStats{Fast: 22, Pion: 23}}
	c := newSFUCollector(func() sfu.Totals { return tot }, func() sfu.Load { return sfu.Load{Calls: 2, Participants: 3} })
	c.readers = func() []uint64 { return []uint64{18, 19} }
	lint(t, c)
	want := `
# HELP videochat_forwarded_packets_total RTP packets forwarded to subscribers (probe padding excluded).
# TYPE videochat_forwarded_packets_total counter
videochat_forwarded_packets_total 20
# HELP videochat_nacks_total Sequence numbers asked for in NACKs: from_subscribers to the SFU, to_publishers by the SFU.
# TYPE videochat_nacks_total counter
videochat_nacks_total{direction="from_subscribers"} 5
videochat_nacks_total{direction="to_publishers"} 4
# HELP videochat_plis_total Keyframe requests: PLIs/FIRs from_subscribers, PLIs sent to_publishers (coalesced).
# TYPE videochat_plis_total counter
videochat_plis_total{direction="from_subscribers"} 7
videochat_plis_total{direction="to_publishers"} 6
# HELP videochat_retransmissions_total Packets resent to subscribers (RTX) in answer to their NACKs.
# TYPE videochat_retransmissions_total counter
videochat_retransmissions_total 8
# HELP videochat_resends_held_back_total NACKed packets not resent to subscribers: too_soon (asked again within a round trip of the last resend), over_rate (over half the subscriber's estimated bitrate).
# TYPE videochat_resends_held_back_total counter
videochat_resends_held_back_total{reason="over_rate"} 21
videochat_resends_held_back_total{reason="too_soon"} 20
# HELP videochat_sfu_participants PeerConnections in the SFU's calls.
# TYPE videochat_sfu_participants gauge
videochat_sfu_participants 3
# HELP videochat_rtp_receive_path_packets_total RTP packets received on the media sockets, by the path they took: fast (decrypted and forwarded by the socket reader), pion (pion's readers).
# TYPE videochat_rtp_receive_path_packets_total counter
videochat_rtp_receive_path_packets_total{path="fast"} 13
videochat_rtp_receive_path_packets_total{path="pion"} 14
# HELP videochat_srtp_auth_failures_total RTP packets of registered streams, and RTCP packets of registered peers, that failed SRTP/SRTCP authentication on the receive fast path (dropped).
# TYPE videochat_srtp_auth_failures_total counter
videochat_srtp_auth_failures_total 17
# HELP videochat_receive_fast_path_released_streams_total Streams given back to pion's readers because none of their packets decrypted on the receive fast path.
# TYPE videochat_receive_fast_path_released_streams_total counter
videochat_receive_fast_path_released_streams_total 16
# HELP videochat_media_reader_overflow_total Datagrams for pion's UDP mux (STUN, DTLS, RTCP, RTP off the fast path) dropped because its queue from the media readers was full.
# TYPE videochat_media_reader_overflow_total counter
videochat_media_reader_overflow_total 17
# HELP videochat_media_reader_packets_total RTP and RTCP packets taken by each media socket reader's fast paths (several sockets per address: -media-readers).
# TYPE videochat_media_reader_packets_total counter
videochat_media_reader_packets_total{reader="0"} 18
videochat_media_reader_packets_total{reader="1"} 19
# HELP videochat_rtp_send_path_packets_total RTP packets sent to subscribers, by the path they took: fast (encrypted and written by the SFU), pion (pion's SRTP session and ICE connection).
# TYPE videochat_rtp_send_path_packets_total counter
videochat_rtp_send_path_packets_total{path="fast"} 22
videochat_rtp_send_path_packets_total{path="pion"} 23
# HELP videochat_rtcp_receive_fast_packets_total RTCP packets decrypted and handled by the media socket reader (the RTCP fast path); the rest go through pion's readers.
# TYPE videochat_rtcp_receive_fast_packets_total counter
videochat_rtcp_receive_fast_packets_total 24
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "videochat_forwarded_packets_total",
		"videochat_nacks_total", "videochat_plis_total", "videochat_retransmissions_total", "videochat_resends_held_back_total", "videochat_sfu_participants",
		"videochat_rtp_receive_path_packets_total", "videochat_srtp_auth_failures_total",
		"videochat_receive_fast_path_released_streams_total", "videochat_media_reader_overflow_total",
		"videochat_media_reader_packets_total", "videochat_rtp_send_path_packets_total",
		"videochat_rtcp_receive_fast_packets_total"); err != nil {
		t.Fatal(err)
	}
	if n := testutil.CollectAndCount(c); n != 29 {
		t.Errorf("%d series, want 29", n)
	}
}

func TestSignalingCollector(t *testing.T) {
	st := signaling.Stats{Connections: 4, UsersOnline: 3, CallsActive: 1, CallsRinging: 2, CallsStarted: 5,
		CallsEnded:  map[string]uint64{signaling.ReasonHangup: 2, signaling.ReasonNoAnswer: 1},
		MessagesIn:  map[string]uint64{"offer": 5, "other": 1},
		MessagesOut: map[string]uint64{"answer": 5},
		Errors:      map[string]uint64{signaling.ErrFlood: 1, signaling.ErrBadSDP: 0}}
	c := newSignalingCollector(func() signaling.Stats { return st })
	lint(t, c)
	want := `
# HELP videochat_active_calls Calls the callee has accepted and that have not ended.
# TYPE videochat_active_calls gauge
videochat_active_calls 1
# HELP videochat_calls_ended_total Calls ended, by the leave reason.
# TYPE videochat_calls_ended_total counter
videochat_calls_ended_total{reason="hangup"} 2
videochat_calls_ended_total{reason="no_answer"} 1
# HELP videochat_users_online Logged-in users (including sessions held for a resume).
# TYPE videochat_users_online gauge
videochat_users_online 3
# HELP videochat_websocket_errors_total Client errors and refusals, by kind.
# TYPE videochat_websocket_errors_total counter
videochat_websocket_errors_total{kind="bad_sdp"} 0
videochat_websocket_errors_total{kind="flood"} 1
# HELP videochat_websocket_messages_total WebSocket messages, by direction (in: received from clients; out: queued for them) and type (other: unknown or unparseable).
# TYPE videochat_websocket_messages_total counter
videochat_websocket_messages_total{direction="in",type="offer"} 5
videochat_websocket_messages_total{direction="in",type="other"} 1
videochat_websocket_messages_total{direction="out",type="answer"} 5
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "videochat_active_calls", "videochat_calls_ended_total",
		"videochat_users_online", "videochat_websocket_errors_total", "videochat_websocket_messages_total"); err != nil {
		t.Fatal(err)
	}
}

func TestTURNCollector(t *testing.T) {
	st := turn.Stats{Allocations: 2, AllocationsTotal: 7, ToPeerBytes: 100, FromPeerBytes: 200,
		ToPeerPackets: 1, FromPeerPackets: 2, Denied: 3}
	c := newTURNCollector(func() turn.Stats { return st })
	lint(t, c)
	want := `
# HELP videochat_turn_allocations Active TURN allocations (relays).
# TYPE videochat_turn_allocations gauge
videochat_turn_allocations 2
# HELP videochat_turn_allocations_total TURN relay sockets allocated since the start.
# TYPE videochat_turn_allocations_total counter
videochat_turn_allocations_total 7
# HELP videochat_turn_relayed_bytes_total Payload bytes relayed by TURN: to_peer (sent by clients), from_peer (sent to clients).
# TYPE videochat_turn_relayed_bytes_total counter
videochat_turn_relayed_bytes_total{direction="from_peer"} 200
videochat_turn_relayed_bytes_total{direction="to_peer"} 100
# HELP videochat_turn_denied_packets_total Relay packets dropped because the peer is not allowed (only the SFU is).
# TYPE videochat_turn_denied_packets_total counter
videochat_turn_denied_packets_total 3
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), "videochat_turn_allocations",
		"videochat_turn_allocations_total", "videochat_turn_relayed_bytes_total", "videochat_turn_denied_packets_total"); err != nil {
		t.Fatal(err)
	}
}

func TestRecorderCollector(t *testing.T) {
	st := recorder.Stats{Active: 2, Finished: 5, Failed: 1, OnFinishFailed: 4}
	c := newRecorderCollector(func() recorder.Stats { return st })
	lint(t, c)
	want := `
# HELP videochat_recordings_active Recordings under way (one file per participant per call).
# TYPE videochat_recordings_active gauge
videochat_recordings_active 2
# HELP videochat_recordings_failed_total Recordings stopped by an error (disk full, write error).
# TYPE videochat_recordings_failed_total counter
videochat_recordings_failed_total 1
# HELP videochat_recordings_finished_total Recordings completed and closed.
# TYPE videochat_recordings_finished_total counter
videochat_recordings_finished_total 5
# HELP videochat_recording_on_finish_failures_total -record-on-finish runs that failed, timed out or were killed.
# TYPE videochat_recording_on_finish_failures_total counter
videochat_recording_on_finish_failures_total 4
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

// fakeSources returns sources whose SFU load has the given estimates.
func fakeSources(bitrates ...int) Sources {
	return Sources{
		SFUTotals: func() sfu.Totals { return sfu.Totals{} },
		SFULoad:   func() sfu.Load { return sfu.Load{EstimatedBitrates: bitrates} },
		Signaling: func() signaling.Stats { return signaling.Stats{} },
	}
}

func TestSetupHistogram(t *testing.T) {
	m := New(fakeSources())
	m.ObserveSetup("caller", 150*time.Millisecond)
	m.ObserveSetup("callee", 2500*time.Millisecond)
	m.ObserveSetup("callee", 40*time.Millisecond)
	if n := testutil.CollectAndCount(m.setup); n != 2 {
		t.Fatalf("%d series, want 2 (caller, callee)", n)
	}
	want := `
# HELP videochat_call_setup_seconds Time from a participant's offer (leg=caller) or answer (leg=callee) to its media connected (ICE and DTLS done).
# TYPE videochat_call_setup_seconds histogram
` + histogramText("videochat_call_setup_seconds", `leg="callee",`, setupBuckets, []float64{2.5, 0.04}) +
		histogramText("videochat_call_setup_seconds", `leg="caller",`, setupBuckets, []float64{0.15})
	if err := testutil.CollectAndCompare(m.setup, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
}

func TestBitrateSampler(t *testing.T) {
	m := New(fakeSources(80_000, 1_200_000))
	m.Sample()
	want := `
# HELP videochat_estimated_bitrate_bps Downlink bandwidth estimates of the participants in calls (bit/s), one observation per participant per sampling interval.
# TYPE videochat_estimated_bitrate_bps histogram
` + histogramText("videochat_estimated_bitrate_bps", "", bitrateBuckets, []float64{80_000, 1_200_000})
	if err := testutil.CollectAndCompare(m.bitrate, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// Run samples on its ticker and ends with its context.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); m.Run(ctx, time.Millisecond) }()
	deadline := time.Now().Add(5 * time.Second)
	for histCount(t, m.bitrate) < 4 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not sample")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
}

func histCount(t *testing.T, h prometheus.Histogram) uint64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(h)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	return mfs[0].GetMetric()[0].GetHistogram().GetSampleCount()
}

// histogramText renders the exposition lines of one histogram series.
func histogramText(name, labels string, buckets, values []float64) string {
	var b strings.Builder
	sum := 0.0
	for _, v := range values {
		sum += v
	}
	for _, le := range buckets {
		n := 0
		for _, v := range values {
			if v <= le {
				n++
			}
		}
		b.WriteString(name + "_bucket{" + labels + `le="` + formatFloat(le) + `"} ` + formatFloat(float64(n)) + "\n")
	}
	b.WriteString(name + "_bucket{" + labels + `le="+Inf"} ` + formatFloat(float64(len(values))) + "\n")
	trim := strings.TrimSuffix(labels, ",")
	if trim != "" {
		trim = "{" + trim + "}"
	}
	b.WriteString(name + "_sum" + trim + " " + formatFloat(sum) + "\n")
	b.WriteString(name + "_count" + trim + " " + formatFloat(float64(len(values))) + "\n")
	return b.String()
}

func formatFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// TestRegistryIsPerInstance: two Metrics in one process do not collide
// (no global registerer), and the whole registry passes promlint.
func TestRegistryIsPerInstance(t *testing.T) {
	src := fakeSources()
	var turnCalls atomic.Int32
	src.TURN = func() turn.Stats { turnCalls.Add(1); return turn.Stats{} }
	src.Recorder = func() recorder.Stats { return recorder.Stats{} }
	a, b := New(src), New(src)
	for _, m := range []*Metrics{a, b} {
		problems, err := testutil.GatherAndLint(m.Registry())
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range problems {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
	srv := httptest.NewServer(a.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"go_goroutines", "videochat_process_resident_memory_bytes", "videochat_turn_allocations",
		"videochat_recordings_active", "videochat_active_calls", "videochat_forwarded_packets_total", "go_build_info"} {
		if !strings.Contains(string(body), want) {
			t.Errorf("scrape lacks %s", want)
		}
	}
	if turnCalls.Load() == 0 {
		t.Error("the TURN collector did not read its source at scrape time")
	}
}
