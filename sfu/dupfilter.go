package sfu

// dupWindow is the number of recent sequence numbers remembered.
const dupWindow = 1024

// dupFilter drops packets already forwarded (a retransmission that arrives
// after the original, or a duplicated datagram) and packets older than the
// window. It is used by one goroutine only.
type dupFilter struct {
	started bool
	first   uint16
	highest uint16
	cycles  uint64 // wrap-arounds of highest
	seen    [dupWindow / 64]uint64
}

// accept reports whether seq is new, and records it.
func (d *dupFilter) accept(seq uint16) bool {
	if !d.started {
		d.started, d.highest, d.first = true, seq, seq
		d.set(seq)
		return true
	}
	diff := int16(seq - d.highest)
	switch {
	case diff > 0:
		if int(diff) >= dupWindow {
			d.seen = [dupWindow / 64]uint64{}
		} else {
			for s := d.highest + 1; s != seq; s++ {
				d.clear(s)
			}
		}
		if seq < d.highest {
			d.cycles++
		}
		d.highest = seq
		d.set(seq)
		return true
	case int(-diff) >= dupWindow:
		return false // too old to tell; the receiver has long given up on it
	case d.has(seq):
		return false
	default:
		d.set(seq)
		return true
	}
}

func (d *dupFilter) set(s uint16)      { d.seen[(s%dupWindow)/64] |= 1 << (s % 64) }
func (d *dupFilter) clear(s uint16)    { d.seen[(s%dupWindow)/64] &^= 1 << (s % 64) }
func (d *dupFilter) has(s uint16) bool { return d.seen[(s%dupWindow)/64]&(1<<(s%64)) != 0 }
