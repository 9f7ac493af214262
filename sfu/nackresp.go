package sfu

import (
	"encoding/binary"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// nackResponder answers a subscriber's NACKs from a copy of what was sent
// to it, like pion's nack.ResponderInterceptor (same wire behaviour: RTX
// with the original sequence number in front of the payload when RTX is
// negotiated, plain retransmission otherwise) but without allocating per
// packet: each video stream keeps its packets in one byte ring (sendRing),
// not in a pooled buffer plus a cloned header per packet. The ring starts
// small and grows, when a lap of it took less than the repair window, to
// hold the window at the stream's measured rate (with a margin), up to a
// cap: memory follows the real bitrate instead of the worst case.
// NACKs are answered on the goroutine that reads the RTCP (the
// downTrack's readRTCP), not in a new goroutine per NACK.
type nackResponder struct {
	interceptor.NoOp
	ringSize
	lim *resendLimit // the PeerConnection's; nil: no limit

	mu      sync.Mutex
	streams map[uint32]*sendRing

	scratches sync.Pool // of *resendScratch
}

// scratch returns space to answer a NACK in.
func (n *nackResponder) scratch() *resendScratch {
	if s, ok := n.scratches.Get().(*resendScratch); ok {
		return s
	}
	return new(resendScratch)
}

// ringSize sizes the send rings: minBytes at first, grown towards window
// of the stream's bytes, at most maxBytes; ringPackets index entries (a
// power of two).
type ringSize struct {
	minBytes, maxBytes, ringPackets int
	window                          time.Duration
}

// nackResponderFactory makes one nackResponder per PeerConnection.
type nackResponderFactory struct {
	ringSize
	lim *resendLimit
}

func (f nackResponderFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &nackResponder{ringSize: f.ringSize, lim: f.lim, streams: map[uint32]*sendRing{}}, nil
}

// streamSupportsNACK reports whether the receiver asked for generic NACK.
func streamSupportsNACK(info *interceptor.StreamInfo) bool {
	for _, fb := range info.RTCPFeedback {
		if fb.Type == "nack" && fb.Parameter == "" {
			return true
		}
	}
	return false
}

// BindLocalStream keeps a copy of every packet of a stream that supports
// NACK.
func (n *nackResponder) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	if !streamSupportsNACK(info) {
		return w
	}
	r := newSendRing(n.ringSize, monoClock())
	r.writer, r.lim = w, n.lim
	r.ssrc, r.rtxSSRC, r.rtxPT = info.SSRC, info.SSRCRetransmission, info.PayloadTypeRetransmission
	r.rtxSeq = uint16(rand.Uint32()) //nolint:gosec // a starting sequence number, not a secret
	n.mu.Lock()
	n.streams[info.SSRC] = r
	n.mu.Unlock()
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if h.SSRC == r.ssrc {
			r.store(h, payload)
		}
		return w.Write(h, payload, a)
	})
}

// UnbindLocalStream forgets the stream.
func (n *nackResponder) UnbindLocalStream(info *interceptor.StreamInfo) {
	n.mu.Lock()
	delete(n.streams, info.SSRC)
	n.mu.Unlock()
}

// Close forgets every stream.
func (n *nackResponder) Close() error {
	n.mu.Lock()
	clear(n.streams)
	n.mu.Unlock()
	return nil
}

// BindRTCPReader answers NACKs as they are read, with scratch space from
// a pool: a reader is called by its goroutine and, for the one the RTCP
// fast path caught, by the media readers at once (rtcpfast.go).
func (n *nackResponder) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		i, attr, err := reader.Read(b, a)
		if err != nil {
			return 0, nil, err
		}
		if attr == nil {
			attr = make(interceptor.Attributes)
		}
		pkts, err := attr.GetRTCPPackets(b[:i])
		if err != nil {
			return 0, nil, err
		}
		for _, p := range pkts {
			if nack, ok := p.(*rtcp.TransportLayerNack); ok {
				s := n.scratch()
				n.resend(nack, s)
				n.scratches.Put(s)
			}
		}
		return i, attr, nil
	})
}

func (n *nackResponder) resend(nack *rtcp.TransportLayerNack, s *resendScratch) {
	n.mu.Lock()
	r := n.streams[nack.MediaSSRC]
	n.mu.Unlock()
	if r == nil {
		return
	}
	for _, pair := range nack.Nacks {
		pair.Range(func(seq uint16) bool {
			r.resend(seq, s)
			return true
		})
	}
}

// sendRing holds the recent packets of one stream: their bytes in a ring
// (a packet that does not fit at the end starts again at the beginning),
// found by sequence number through an index of ringPackets entries. A
// packet can be resent while its bytes have not been overwritten; the
// index is a power of two.
type sendRing struct {
	writer        interceptor.RTPWriter
	ssrc, rtxSSRC uint32
	rtxPT         uint8
	size          ringSize
	clock         func() time.Duration // monotonic

	mu      sync.Mutex
	buf     []byte
	written uint64        // bytes ever written (ring positions are written % len(buf))
	since   uint64        // bytes before this absolute position are gone (a growth kept only the last lap)
	mark    time.Duration // when written was markAt: the rate is measured from there
	markAt  uint64
	index   []ringEntry
	rtxSeq  uint16
	lim     *resendLimit
	marks   [resendMarks]resendMark // the packets resent lately
	nextMrk int
}

// resendMarks is how many recent resends a ring remembers, to resend a
// packet at most once per round trip. A loss burst larger than this can
// get one of its packets resent early; the rate limit still holds.
const resendMarks = 64

type resendMark struct {
	at  time.Duration
	seq uint16
	set bool
}

// monoClock returns a monotonic clock starting now.
func monoClock() func() time.Duration {
	start := time.Now()
	return func() time.Duration { return time.Since(start) }
}

type ringEntry struct {
	at         uint64 // absolute start of the packet's bytes
	hlen, plen uint16 // marshalled header, payload (without padding)
	padding    uint8
	seq        uint16
	valid      bool
}

// maxStoredPacket is the largest header plus payload kept; pion's own
// responder refuses payloads over 1,460 bytes.
const maxStoredPacket = 1500

func newSendRing(size ringSize, clock func() time.Duration) *sendRing {
	size.minBytes = max(size.minBytes, maxStoredPacket)
	size.maxBytes = max(size.maxBytes, size.minBytes)
	return &sendRing{size: size, clock: clock, buf: make([]byte, size.minBytes), index: make([]ringEntry, size.ringPackets)}
}

// store copies a packet into the ring.
func (r *sendRing) store(h *rtp.Header, payload []byte) {
	hlen := h.MarshalSize()
	size := hlen + len(payload)
	if size > maxStoredPacket {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.written == 0 {
		r.mark = r.clock()
	}
	pos := int(r.written % uint64(len(r.buf)))
	if pos+size > len(r.buf) { // the end of a lap
		now := r.clock()
		if len(r.buf) < r.size.maxBytes {
			// The time the buffer holds at the rate since the mark.
			held := time.Duration(float64(now-r.mark) * float64(len(r.buf)) / float64(r.written-r.markAt))
			if held < r.size.window {
				r.grow(held)
				pos = int(r.written % uint64(len(r.buf)))
			}
		}
		r.mark, r.markAt = now, r.written
	}
	if pos+size > len(r.buf) { // wrap: skip the tail
		r.written += uint64(len(r.buf) - pos)
		pos = 0
	}
	if _, err := h.MarshalTo(r.buf[pos : pos+hlen]); err != nil {
		return
	}
	copy(r.buf[pos+hlen:], payload)
	r.index[int(h.SequenceNumber)&(len(r.index)-1)] = ringEntry{
		at: r.written, hlen: uint16(hlen), plen: uint16(len(payload)), //nolint:gosec // both ≤ maxStoredPacket
		padding: h.PaddingSize, seq: h.SequenceNumber, valid: true,
	}
	r.written += uint64(size)
}

// ringGrowStep is the granularity of ring sizes.
const ringGrowStep = 4 << 10

// grow replaces the buffer, which holds only held of the stream at the
// rate of its last lap, by one holding the repair window at that rate with
// a quarter more as margin, keeping the bytes of the last lap at their
// absolute positions. Each step is between 1.25 and 2 times the size: a lap
// during a keyframe burst runs faster than the stream's average, and one
// step sized from it alone would overshoot. Called with r.mu held.
func (r *sendRing) grow(held time.Duration) {
	old := len(r.buf)
	n := old * 2
	if held > 0 {
		n = int(min(float64(old)*float64(r.size.window)/float64(held)*5/4, float64(n)))
	}
	n = max(n, old*5/4)
	n = min((n+ringGrowStep-1)/ringGrowStep*ringGrowStep, r.size.maxBytes)
	if n <= old {
		return
	}
	nb := make([]byte, n)
	from := r.written - min(r.written, uint64(old))
	for a := from; a < r.written; {
		op, np := int(a%uint64(old)), int(a%uint64(n))
		k := min(old-op, n-np, int(r.written-a))
		copy(nb[np:np+k], r.buf[op:op+k])
		a += uint64(k)
	}
	r.buf, r.since = nb, from
}

// resendScratch is where a packet is copied to be resent.
type resendScratch struct {
	buf [maxStoredPacket + 2]byte
	hdr rtp.Header
}

// load copies packet seq into s: the header at s.buf[0:hlen], the payload
// two bytes after it (room for RTX's original sequence number).
// It fails for a packet the ring no longer has and for a resend the
// limit holds back.
func (r *sendRing) load(seq uint16, s *resendScratch) (e ringEntry, ok bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e = r.index[int(seq)&(len(r.index)-1)]
	if !e.valid || e.seq != seq || e.at < r.since || r.written-e.at > uint64(len(r.buf)) {
		return e, false // never stored, replaced, or its bytes overwritten or dropped
	}
	if !r.mayResend(seq, int(e.hlen)+int(e.plen)+2) {
		return e, false
	}
	r.readAt(s.buf[:e.hlen], e.at)
	r.readAt(s.buf[int(e.hlen)+2:int(e.hlen)+2+int(e.plen)], e.at+uint64(e.hlen))
	return e, true
}

// mayResend applies the limit to a resend of seq (size bytes) and, if it
// may go, remembers it. Called with r.mu held.
func (r *sendRing) mayResend(seq uint16, size int) bool {
	if r.lim == nil {
		return true
	}
	now, gap := r.clock(), r.lim.gap()
	free := -1
	for i := range r.marks {
		m := &r.marks[i]
		if !m.set || m.seq != seq {
			continue
		}
		if now-m.at < gap {
			r.lim.refusedRTT.Add(1)
			return false
		}
		free = i
	}
	if !r.lim.take(size) {
		return false
	}
	if free < 0 {
		free, r.nextMrk = r.nextMrk, (r.nextMrk+1)%len(r.marks)
	}
	r.marks[free] = resendMark{at: now, seq: seq, set: true}
	return true
}

// readAt copies len(dst) bytes from absolute position a. A packet is
// stored in one piece, but grow copies the last lap to positions modulo
// the new size, where a packet can run over the end of the buffer and
// continue at its start. Called with r.mu held.
func (r *sendRing) readAt(dst []byte, a uint64) {
	k := copy(dst, r.buf[a%uint64(len(r.buf)):])
	copy(dst[k:], r.buf)
}

// resend sends packet seq again: over RTX when negotiated, else as it was.
func (r *sendRing) resend(seq uint16, s *resendScratch) {
	e, ok := r.load(seq, s)
	if !ok {
		return
	}
	if _, err := s.hdr.Unmarshal(s.buf[:e.hlen]); err != nil {
		return
	}
	h := &s.hdr
	h.PaddingSize = e.padding
	hl := int(e.hlen)
	payload := s.buf[hl+2 : hl+2+int(e.plen)]
	if r.rtxSSRC != 0 && r.rtxPT != 0 {
		binary.BigEndian.PutUint16(s.buf[hl:], h.SequenceNumber)
		payload = s.buf[hl : hl+2+int(e.plen)]
		if h.Padding && h.PaddingSize == 0 && len(payload) > 2 {
			// Padding carried in the payload (older pion/rtp users).
			p := int(payload[len(payload)-1])
			if p > len(payload)-2 {
				return
			}
			payload = payload[:len(payload)-p]
		}
		h.Padding, h.PaddingSize = false, 0
		h.SSRC, h.PayloadType = r.rtxSSRC, r.rtxPT
		r.mu.Lock()
		h.SequenceNumber = r.rtxSeq
		r.rtxSeq++
		r.mu.Unlock()
	}
	_, _ = r.writer.Write(h, payload, nil)
}
