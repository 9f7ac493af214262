package sfu

// Recording starts only when the people in a call have agreed to it by
// being in it: signaling calls StartRecording once the callee has accepted.
// Until then nothing reaches the recorder, so a declined, unanswered or
// busy call leaves no file. Tracks that start later are recorded from
// their start; tracks already running are recorded from the next keyframe
// (the recorder asks for one).

// StartRecording records every track of the call from now on (if the SFU
// has a Recorder). Idempotent.
func (c *Call) StartRecording() {
	if c.sfu.cfg.Recorder == nil {
		return
	}
	c.mu.Lock()
	if c.recording || c.closed {
		c.mu.Unlock()
		return
	}
	c.recording = true
	parts := append([]*Participant(nil), c.parts...)
	c.mu.Unlock()
	for _, p := range parts {
		for _, up := range p.upTracks() {
			p.startRecording(up)
		}
	}
}

func (c *Call) recorded() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.recording
}

// startRecording offers up to the recorder, once.
func (p *Participant) startRecording(up *upTrack) {
	rec := p.sfu.cfg.Recorder
	if rec == nil || up.ended.Load() || !up.recOn.CompareAndSwap(false, true) {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.wg.Add(1) // under p.mu, so never after closePC's Wait began
	p.mu.Unlock()
	w := rec.StartTrack(TrackInfo{
		CallID: p.call.id, Participant: p.name, Kind: up.kind,
		Codec: up.track.Codec(), SSRC: uint32(up.track.SSRC()), RequestKeyframe: up.requestKeyframe,
	})
	if w == nil {
		p.wg.Done()
		return
	}
	q := newRecordQueue(w)
	up.rec.Store(q)
	if up.ended.Load() {
		q.stop() // the track ended meanwhile: close will not see q
	}
	go func() {
		defer p.wg.Done()
		err := q.run()
		if n := q.dropped.Load(); n > 0 {
			p.log.Warn("recorder fell behind; packets dropped", "kind", up.kind.String(), "dropped", n)
		}
		if err != nil {
			p.log.Error("recording stopped", "kind", up.kind.String(), "err", err)
		}
	}()
	up.requestKeyframe()
}
