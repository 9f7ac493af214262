package metrics

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"videochat/sfu"
)

// sfuCollector reads the SFU's totals and load at scrape time.
type sfuCollector struct {
	totals  func() sfu.Totals
	readers func() []uint64 // optional
	load    func() sfu.Load

	calls, participants                                   *prometheus.Desc
	recvPackets, recvBytes, fwdPackets, fwdBytes          *prometheus.Desc
	lost, recovered, duplicates, nacks, plis, retransmits *prometheus.Desc
	padding, writeErrors, recordDropped, rxPath, rxAuth   *prometheus.Desc
	txPath, rtcpFast                                      *prometheus.Desc
	rxReleased, rxOverflow, rxReaders, resendsHeld        *prometheus.Desc
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, "", name), help, labels, nil)
}

func newSFUCollector(totals func() sfu.Totals, load func() sfu.Load) *sfuCollector {
	return &sfuCollector{totals: totals, load: load,
		calls:        desc("sfu_calls", "Calls with media sessions in the SFU (ringing or active)."),
		participants: desc("sfu_participants", "PeerConnections in the SFU's calls."),
		recvPackets:  desc("received_packets_total", "RTP packets received from publishers (unique; duplicates excluded)."),
		recvBytes:    desc("received_bytes_total", "RTP bytes received from publishers (unique packets)."),
		fwdPackets:   desc("forwarded_packets_total", "RTP packets forwarded to subscribers (probe padding excluded)."),
		fwdBytes:     desc("forwarded_bytes_total", "RTP bytes forwarded to subscribers."),
		lost:         desc("packets_lost_total", "Publisher packets that never arrived, even after NACK/RTX repair."),
		recovered:    desc("packets_recovered_total", "Publisher packets that arrived as retransmissions (loss repaired)."),
		duplicates:   desc("duplicate_packets_total", "Publisher packets dropped as duplicates or too late."),
		nacks:        desc("nacks_total", "Sequence numbers asked for in NACKs: from_subscribers to the SFU, to_publishers by the SFU.", "direction"),
		plis:         desc("plis_total", "Keyframe requests: PLIs/FIRs from_subscribers, PLIs sent to_publishers (coalesced).", "direction"),
		retransmits:  desc("retransmissions_total", "Packets resent to subscribers (RTX) in answer to their NACKs."),
		resendsHeld: desc("resends_held_back_total",
			"NACKed packets not resent to subscribers: too_soon (asked again within a round trip of the last resend), over_rate (over half the subscriber's estimated bitrate).", "reason"),
		padding:       desc("probe_padding_packets_total", "Padding-only packets sent to subscribers as bandwidth probes."),
		writeErrors:   desc("forward_write_errors_total", "Packets that could not be sent to a subscriber."),
		recordDropped: desc("recorder_dropped_packets_total", "Packets the recorder could not keep up with."),
		rxPath: desc("rtp_receive_path_packets_total",
			"RTP packets received on the media sockets, by the path they took: fast (decrypted and forwarded by the socket reader), pion (pion's readers).", "path"),
		txPath: desc("rtp_send_path_packets_total",
			"RTP packets sent to subscribers, by the path they took: fast (encrypted and written by the SFU), pion (pion's SRTP session and ICE connection).", "path"),
		rxAuth: desc("srtp_auth_failures_total", "RTP packets of registered streams, and RTCP packets of registered peers, that failed SRTP/SRTCP authentication on the receive fast path (dropped)."),
		rtcpFast: desc("rtcp_receive_fast_packets_total",
			"RTCP packets decrypted and handled by the media socket reader (the RTCP fast path); the rest go through pion's readers."),
		rxOverflow: desc("media_reader_overflow_total",
			"Datagrams for pion's UDP mux (STUN, DTLS, RTCP, RTP off the fast path) dropped because its queue from the media readers was full."),
		rxReaders: desc("media_reader_packets_total",
			"RTP and RTCP packets taken by each media socket reader's fast paths (several sockets per address: -media-readers).", "reader"),
		rxReleased: desc("receive_fast_path_released_streams_total",
			"Streams given back to pion's readers because none of their packets decrypted on the receive fast path."),
	}
}

func (c *sfuCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.calls, c.participants, c.recvPackets, c.recvBytes, c.fwdPackets,
		c.fwdBytes, c.lost, c.recovered, c.duplicates, c.nacks, c.plis, c.retransmits, c.padding,
		c.writeErrors, c.recordDropped, c.rxPath, c.rxAuth, c.rxReleased, c.rxOverflow, c.rxReaders, c.resendsHeld, c.txPath, c.rtcpFast} {
		ch <- d
	}
}

func (c *sfuCollector) Collect(ch chan<- prometheus.Metric) {
	t, l := c.totals(), c.load()
	gauge := func(d *prometheus.Desc, v int) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v))
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge(c.calls, l.Calls)
	gauge(c.participants, l.Participants)
	counter(c.recvPackets, t.ReceivedPackets)
	counter(c.recvBytes, t.ReceivedBytes)
	counter(c.fwdPackets, t.ForwardedPackets)
	counter(c.fwdBytes, t.ForwardedBytes)
	counter(c.lost, t.Lost)
	counter(c.recovered, t.Recovered)
	counter(c.duplicates, t.Duplicates)
	counter(c.nacks, t.NACKsReceived, "from_subscribers")
	counter(c.nacks, t.NACKsSent, "to_publishers")
	counter(c.plis, t.PLIsReceived, "from_subscribers")
	counter(c.plis, t.PLIsSent, "to_publishers")
	counter(c.retransmits, t.Retransmissions)
	counter(c.resendsHeld, t.ResendsTooSoon, "too_soon")
	counter(c.resendsHeld, t.ResendsOverRate, "over_rate")
	counter(c.padding, t.PaddingPackets)
	counter(c.writeErrors, t.WriteErrors)
	counter(c.recordDropped, t.RecordDropped)
	counter(c.rxPath, t.ReceivePath.Fast, "fast")
	counter(c.rxPath, t.ReceivePath.Fallback, "pion")
	counter(c.txPath, t.SendPath.Fast, "fast")
	counter(c.txPath, t.SendPath.Pion, "pion")
	counter(c.rxAuth, t.ReceivePath.AuthFailures+t.ReceivePath.RTCPFailures)
	counter(c.rtcpFast, t.ReceivePath.RTCP)
	counter(c.rxReleased, t.ReceivePath.Released)
	counter(c.rxOverflow, t.ReceivePath.Overflow)
	if c.readers != nil {
		for i, n := range c.readers() {
			counter(c.rxReaders, n, strconv.Itoa(i))
		}
	}
}
