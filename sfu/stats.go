package sfu

// UpStats are the numbers of one track a participant publishes.
type UpStats struct {
	Kind             string
	SSRC             uint32
	Packets, Bytes   uint64 // forwarded (unique) packets and their bytes
	Duplicates       uint64 // dropped as already forwarded or too late
	Recovered        uint64 // arrived as retransmissions (loss repaired by NACK/RTX)
	Lost             uint64 // never arrived, even after repair
	NACKed           uint64 // sequence numbers the SFU asked the publisher to resend
	KeyframeRequests uint64 // PLIs sent to the publisher
	REMB             uint64 // last bitrate limit sent to the publisher (bit/s)
	RecordDropped    uint64 // packets the recorder could not keep up with
}

// DownStats are the numbers of one track a participant receives.
type DownStats struct {
	Kind              string
	Packets, Bytes    uint64
	PLIs, FIRs, NACKs uint64 // from the receiver (NACKs: sequence numbers asked for)
	Retransmitted     uint64 // packets resent to the receiver (RTX) in answer to NACKs
	Padding           uint64 // padding-only packets sent as bandwidth probes
	PaddingBytes      uint64
	WriteErrors       uint64
	// Resumes counts the receiver's RTCP on a video track coming back
	// after a silence (an outage on its downlink); each asked the source
	// for a keyframe.
	Resumes uint64
}

// ParticipantStats is a snapshot of one participant.
type ParticipantStats struct {
	Name string
	// EstimatedBitrate is the downlink estimate from the participant's
	// congestion control feedback (bit/s), 0 if unknown.
	EstimatedBitrate int
	// ProbeClusters counts the bandwidth probes sent to this participant;
	// ProbeRaises those that raised its estimate.
	ProbeClusters, ProbeRaises int
	// ResendsTooSoon and ResendsOverRate count the NACKed packets not
	// resent to this participant: asked again within a round trip of the
	// last resend, or over its estimated rate (resendlimit.go).
	ResendsTooSoon, ResendsOverRate uint64
	Up                              []UpStats
	Down                            []DownStats
}

// Stats returns a snapshot of the participant's numbers.
func (p *Participant) Stats() ParticipantStats {
	ps := ParticipantStats{Name: p.name}
	if p.bwe != nil {
		ps.EstimatedBitrate = p.bwe.GetTargetBitrate()
	}
	if pe, ok := p.bwe.(*probingEstimator); ok {
		ps.ProbeClusters, ps.ProbeRaises = pe.probeStats()
	}
	ps.ResendsTooSoon, ps.ResendsOverRate = p.hooks.resend.refused()
	for _, u := range p.upTracks() {
		s := u.snapshot()
		s.NACKed = p.repair.Nacked(s.SSRC)
		ps.Up = append(ps.Up, s)
	}
	for _, d := range p.down {
		ps.Down = append(ps.Down, DownStats{
			Kind: d.kind.String(), Packets: d.stats.packets.Load(), Bytes: d.stats.bytes.Load(),
			PLIs: d.stats.plis.Load(), FIRs: d.stats.firs.Load(), NACKs: d.stats.nacks.Load(),
			WriteErrors: d.stats.writeErrors.Load(), Retransmitted: p.repair.Resent(d.boundSSRC()),
			Padding: d.stats.padding.Load(), PaddingBytes: d.stats.paddingBytes.Load(),
			Resumes: d.stats.resumes.Load(),
		})
	}
	return ps
}

func (u *upTrack) snapshot() UpStats {
	s := UpStats{
		Kind: u.kind.String(), Packets: u.stats.packets.Load(), Bytes: u.stats.bytes.Load(),
		Duplicates: u.stats.duplicates.Load(), Recovered: u.stats.recovered.Load(),
		KeyframeRequests: u.stats.keyframeRequests.Load(), REMB: u.stats.remb.Load(),
	}
	if u.track != nil {
		s.SSRC = uint32(u.track.SSRC())
	}
	if exp := u.rx.expected(); exp > s.Packets {
		s.Lost = exp - s.Packets
	}
	if q := u.rec.Load(); q != nil {
		s.RecordDropped = q.dropped.Load()
	}
	return s
}

// Stats returns a snapshot of every participant of the call.
func (c *Call) Stats() []ParticipantStats {
	c.mu.Lock()
	parts := append([]*Participant(nil), c.parts...)
	c.mu.Unlock()
	out := make([]ParticipantStats, 0, len(parts))
	for _, p := range parts {
		out = append(out, p.Stats())
	}
	return out
}

// Stats returns a snapshot of every active call, by call id.
func (s *SFU) Stats() map[string][]ParticipantStats {
	s.mu.Lock()
	calls := make([]*Call, 0, len(s.calls))
	for c := range s.calls {
		calls = append(calls, c)
	}
	s.mu.Unlock()
	out := make(map[string][]ParticipantStats, len(calls))
	for _, c := range calls {
		out[c.id] = c.Stats()
	}
	return out
}
