package sfu

// rewriter maps the sequence numbers and timestamps of whichever source
// currently feeds an outgoing track onto one continuous outgoing sequence,
// so a receiver's decoder never sees a jump when the source changes.
// It is not safe for concurrent use.
type rewriter struct {
	tsGap   uint32 // timestamp step inserted at a source switch
	started bool
	switchd bool   // the next packet starts a new source run
	ssrc    uint32 // source the offsets belong to
	seqOff  uint16
	tsOff   uint32
	lastSeq uint16 // highest outgoing sequence number so far
	lastTS  uint32 // its timestamp
}

// newRewriter returns a rewriter that inserts tsGap ticks between the last
// packet of one source and the first packet of the next.
func newRewriter(tsGap uint32) rewriter { return rewriter{tsGap: tsGap} }

// rewrite returns the outgoing sequence number and timestamp for a packet.
func (r *rewriter) rewrite(ssrc uint32, seq uint16, ts uint32) (uint16, uint32) {
	switch {
	case !r.started:
		r.started, r.switchd, r.ssrc = true, false, ssrc
		r.lastSeq, r.lastTS = seq-1, ts
	case r.switchd || ssrc != r.ssrc:
		r.switchd, r.ssrc = false, ssrc
		r.seqOff = r.lastSeq + 1 - seq
		r.tsOff = r.lastTS + r.tsGap - ts
	}
	outSeq, outTS := seq+r.seqOff, ts+r.tsOff
	if int16(outSeq-r.lastSeq) > 0 {
		r.lastSeq, r.lastTS = outSeq, outTS
	}
	return outSeq, outTS
}

// sourceChanged makes the next packet continue the outgoing sequence even
// if it comes from the same SSRC as before.
func (r *rewriter) sourceChanged() { r.switchd = true }
