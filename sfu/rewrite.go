package sfu

// rewriter maps the sequence numbers and timestamps of whichever source
// currently feeds an outgoing track onto one continuous outgoing sequence,
// so a receiver's decoder never sees a jump when the source changes. It
// also makes room for padding packets of our own (bandwidth probes)
// between two frames: each shifts the packets that follow by one, while
// late packets from before the padding keep their old numbers.
// It is not safe for concurrent use.
type rewriter struct {
	tsGap   uint32 // timestamp step inserted at a source switch
	started bool
	switchd bool   // the next packet starts a new source run
	ssrc    uint32 // source the offsets belong to
	seqOff  uint16 // offset of source packets newer than every shift
	tsOff   uint32
	lastSeq uint16 // highest outgoing sequence number so far
	lastTS  uint32 // its timestamp
	lastSrc uint16 // source sequence number of the highest packet
	atEnd   bool   // the highest packet ended a frame (or was padding)

	// shifts[i] says: source packets up to boundary use offset before.
	// Oldest first; when it overflows the oldest is dropped and packets
	// older than every boundary can no longer be numbered (truncated).
	shifts    [maxShifts]seqShift
	nShifts   int
	truncated bool
}

type seqShift struct{ boundary, before uint16 }

// maxShifts bounds how far back (in padding bursts, about one per frame
// while probing) a late packet can still be placed: 32 frames, a second.
const maxShifts = 32

// newRewriter returns a rewriter that inserts tsGap ticks between the last
// packet of one source and the first packet of the next.
func newRewriter(tsGap uint32) rewriter { return rewriter{tsGap: tsGap} }

// rewrite returns the outgoing sequence number and timestamp for a packet.
func (r *rewriter) rewrite(ssrc uint32, seq uint16, ts uint32) (uint16, uint32) {
	s, t, _ := r.mapPacket(ssrc, seq, ts, false)
	return s, t
}

// mapPacket is rewrite for a packet whose marker bit is known; ok is false
// for a packet too old to be placed (it must be dropped).
func (r *rewriter) mapPacket(ssrc uint32, seq uint16, ts uint32, marker bool) (uint16, uint32, bool) {
	switch {
	case !r.started:
		r.started, r.switchd, r.ssrc = true, false, ssrc
		r.lastSeq, r.lastTS, r.lastSrc = seq-1, ts, seq-1
	case r.switchd || ssrc != r.ssrc:
		r.switchd, r.ssrc = false, ssrc
		r.seqOff = r.lastSeq + 1 - seq
		r.tsOff = r.lastTS + r.tsGap - ts
		r.nShifts, r.truncated = 0, false
	}
	off, ok := r.offsetFor(seq)
	if !ok {
		return 0, 0, false
	}
	outSeq, outTS := seq+off, ts+r.tsOff
	if int16(outSeq-r.lastSeq) > 0 {
		r.lastSeq, r.lastTS, r.lastSrc, r.atEnd = outSeq, outTS, seq, marker
	}
	return outSeq, outTS, true
}

// offsetFor finds the sequence offset in force for source packet seq.
func (r *rewriter) offsetFor(seq uint16) (uint16, bool) {
	off := r.seqOff
	for i := r.nShifts - 1; i >= 0; i-- {
		s := r.shifts[i]
		if int16(seq-s.boundary) > 0 {
			return off, true
		}
		off = s.before
	}
	if r.nShifts > 0 && r.truncated {
		return 0, false
	}
	return off, true
}

// betweenFrames reports whether a padding packet may be sent now: the
// last packet sent ended a frame, so padding splits no frame.
func (r *rewriter) betweenFrames() bool { return r.started && !r.switchd && r.atEnd }

// padding allocates the next outgoing sequence number for a padding packet
// and returns it with the timestamp to use (the last frame's). The caller
// checks betweenFrames first.
func (r *rewriter) padding() (uint16, uint32) {
	if r.nShifts == 0 || r.shifts[r.nShifts-1].boundary != r.lastSrc {
		if r.nShifts == maxShifts {
			copy(r.shifts[:], r.shifts[1:])
			r.nShifts--
			r.truncated = true
		}
		r.shifts[r.nShifts] = seqShift{boundary: r.lastSrc, before: r.seqOff}
		r.nShifts++
	}
	r.seqOff++
	r.lastSeq++
	return r.lastSeq, r.lastTS
}

// sourceChanged makes the next packet continue the outgoing sequence even
// if it comes from the same SSRC as before.
func (r *rewriter) sourceChanged() { r.switchd = true }
