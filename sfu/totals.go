package sfu

// Totals are the SFU's counters since it started: the final numbers of
// every participant that has left plus the current numbers of those still
// in a call. They only grow (Prometheus counters are built on them), and
// reading them costs nothing on the forwarding path: each track counts in
// its own atomics, which Totals sums when asked.
type Totals struct {
	// Received from publishers: unique packets and their bytes.
	ReceivedPackets, ReceivedBytes uint64
	// Forwarded to subscribers: packets and bytes sent (probe padding
	// excluded; see PaddingPackets).
	ForwardedPackets, ForwardedBytes uint64
	// Duplicates dropped, packets recovered by retransmission, and packets
	// lost for good, on the publishers' side.
	Duplicates, Recovered, Lost uint64
	// NACKsSent: sequence numbers the SFU asked publishers to resend;
	// NACKsReceived: sequence numbers subscribers asked the SFU for.
	NACKsSent, NACKsReceived uint64
	// PLIsSent: keyframe requests sent to publishers; PLIsReceived: PLIs
	// and FIRs from subscribers.
	PLIsSent, PLIsReceived uint64
	// Retransmissions: packets resent to subscribers (RTX) for their NACKs.
	Retransmissions uint64
	// ResendsTooSoon, ResendsOverRate: NACKed packets not resent, asked
	// again within a round trip of their last resend or over the
	// subscriber's retransmission budget (resendlimit.go).
	ResendsTooSoon, ResendsOverRate uint64
	// PaddingPackets: padding-only packets sent as bandwidth probes.
	PaddingPackets uint64
	// WriteErrors: packets that could not be sent to a subscriber.
	WriteErrors uint64
	// RecordDropped: packets the recorder could not keep up with.
	RecordDropped uint64
	// ReceivePath: received RTP by the path it took (SFU.ReceivePath;
	// not per participant).
	ReceivePath ReceivePathStats
	// SendPath: sent RTP by the path it took (SFU.SendPath; not per
	// participant).
	SendPath SendPathStats
}

func (t *Totals) add(o Totals) {
	t.ReceivedPackets += o.ReceivedPackets
	t.ReceivedBytes += o.ReceivedBytes
	t.ForwardedPackets += o.ForwardedPackets
	t.ForwardedBytes += o.ForwardedBytes
	t.Duplicates += o.Duplicates
	t.Recovered += o.Recovered
	t.Lost += o.Lost
	t.NACKsSent += o.NACKsSent
	t.NACKsReceived += o.NACKsReceived
	t.PLIsSent += o.PLIsSent
	t.PLIsReceived += o.PLIsReceived
	t.Retransmissions += o.Retransmissions
	t.ResendsTooSoon += o.ResendsTooSoon
	t.ResendsOverRate += o.ResendsOverRate
	t.PaddingPackets += o.PaddingPackets
	t.WriteErrors += o.WriteErrors
	t.RecordDropped += o.RecordDropped
}

// totalsOf sums one participant's snapshot.
func totalsOf(ps ParticipantStats) Totals {
	t := Totals{ResendsTooSoon: ps.ResendsTooSoon, ResendsOverRate: ps.ResendsOverRate}
	for _, u := range ps.Up {
		t.ReceivedPackets += u.Packets
		t.ReceivedBytes += u.Bytes
		t.Duplicates += u.Duplicates
		t.Recovered += u.Recovered
		t.Lost += u.Lost
		t.NACKsSent += u.NACKed
		t.PLIsSent += u.KeyframeRequests
		t.RecordDropped += u.RecordDropped
	}
	for _, d := range ps.Down {
		t.ForwardedPackets += d.Packets
		t.ForwardedBytes += d.Bytes
		t.NACKsReceived += d.NACKs
		t.PLIsReceived += d.PLIs + d.FIRs
		t.Retransmissions += d.Retransmitted
		t.PaddingPackets += d.Padding
		t.WriteErrors += d.WriteErrors
	}
	return t
}

// Totals returns the counters since the SFU started. A participant's
// numbers move from "live" to "ended" under the same lock Totals holds,
// so no sum ever goes down.
func (s *SFU) Totals() Totals {
	s.totMu.Lock()
	defer s.totMu.Unlock()
	t := s.ended
	for p := range s.live {
		t.add(p.totals())
	}
	t.ReceivePath = s.ReceivePath()
	t.SendPath = s.SendPath()
	return t
}

// Load is what the SFU carries now; the self-test's probes (Probe) are
// left out.
type Load struct {
	Calls, Participants int
	// EstimatedBitrates are the participants' current downlink estimates
	// (bit/s); participants without one are left out.
	EstimatedBitrates []int
}

// Load returns the current calls, participants and bandwidth estimates.
func (s *SFU) Load() Load {
	var l Load
	s.mu.Lock()
	for c := range s.calls {
		if !c.probe {
			l.Calls++
		}
	}
	s.mu.Unlock()
	s.totMu.Lock()
	parts := make([]*Participant, 0, len(s.live))
	for p := range s.live {
		if !p.call.probe {
			parts = append(parts, p)
		}
	}
	s.totMu.Unlock()
	l.Participants = len(parts)
	for _, p := range parts {
		if p.bwe != nil {
			if b := p.bwe.GetTargetBitrate(); b > 0 {
				l.EstimatedBitrates = append(l.EstimatedBitrates, b)
			}
		}
	}
	return l
}

// track and retire move a participant into and out of the live set.
func (s *SFU) track(p *Participant) {
	s.totMu.Lock()
	s.live[p] = struct{}{}
	s.totMu.Unlock()
}

// retire is called when p's goroutines have ended: its numbers are final.
func (s *SFU) retire(p *Participant) {
	s.totMu.Lock()
	defer s.totMu.Unlock()
	if _, ok := s.live[p]; !ok {
		return
	}
	delete(s.live, p)
	s.ended.add(p.totals())
}

// totals sums p's numbers, including the tracks a restarted publisher
// replaced (counted as they were when replaced).
func (p *Participant) totals() Totals {
	t := totalsOf(p.Stats())
	p.mu.Lock()
	t.add(p.retired)
	p.mu.Unlock()
	return t
}
