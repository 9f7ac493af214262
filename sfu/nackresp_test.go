package sfu

import (
	"bytes"
	"encoding/binary"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
)

// sentPackets records what a writer below the responder was given.
type sentPackets struct{ pkts []rtp.Packet }

func (s *sentPackets) Write(h *rtp.Header, payload []byte, _ interceptor.Attributes) (int, error) {
	hc := h.Clone()
	s.pkts = append(s.pkts, rtp.Packet{Header: hc, Payload: append([]byte(nil), payload...)})
	return len(payload), nil
}

// rtcpFeed is an RTCPReader returning one marshalled packet per Read.
type rtcpFeed struct{ next []byte }

func (f *rtcpFeed) Read(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
	return copy(b, f.next), a, nil
}

func newTestResponder(t *testing.T, rtxSSRC uint32, rtxPT uint8, ringBytes int) (interceptor.RTPWriter, *sentPackets, func(...uint16)) {
	t.Helper()
	i, _ := nackResponderFactory{ringSize: ringSize{minBytes: ringBytes, maxBytes: ringBytes, ringPackets: 64}}.NewInterceptor("")
	below := &sentPackets{}
	info := &interceptor.StreamInfo{SSRC: 1000, SSRCRetransmission: rtxSSRC, PayloadTypeRetransmission: rtxPT,
		RTCPFeedback: []interceptor.RTCPFeedback{{Type: "nack"}}}
	w := i.BindLocalStream(info, below)
	feed := &rtcpFeed{}
	r := i.BindRTCPReader(feed)
	nack := func(seqs ...uint16) {
		pairs := rtcp.NackPairsFromSequenceNumbers(seqs)
		raw, err := (&rtcp.TransportLayerNack{MediaSSRC: 1000, Nacks: pairs}).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		feed.next = raw
		if _, _, err := r.Read(make([]byte, 1500), nil); err != nil {
			t.Fatal(err)
		}
	}
	return w, below, nack
}

func payloadFor(seq uint16) []byte { return bytes.Repeat([]byte{byte(seq)}, 100+int(seq)%50) }

func sendSeqs(t *testing.T, w interceptor.RTPWriter, from, to uint16) {
	t.Helper()
	for seq := from; seq != to; seq++ {
		h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, Timestamp: 90 * uint32(seq), SSRC: 1000}
		_ = h.SetExtension(3, []byte{byte(seq >> 8), byte(seq)})
		if _, err := w.Write(&h, payloadFor(seq), nil); err != nil {
			t.Fatal(err)
		}
	}
}

func TestNACKResponderRTX(t *testing.T) {
	w, below, nack := newTestResponder(t, 2000, 97, 64<<10)
	sendSeqs(t, w, 65530, 10) // across the wrap
	below.pkts = nil
	nack(65533, 2, 3, 500) // 500 was never sent
	if len(below.pkts) != 3 {
		t.Fatalf("resent %d packets, want 3", len(below.pkts))
	}
	for i, want := range []uint16{65533, 2, 3} {
		p := below.pkts[i]
		if p.SSRC != 2000 || p.PayloadType != 97 {
			t.Errorf("packet %d: ssrc %d pt %d, want RTX 2000/97", i, p.SSRC, p.PayloadType)
		}
		if osn := binary.BigEndian.Uint16(p.Payload); osn != want {
			t.Errorf("packet %d: original sequence number %d, want %d", i, osn, want)
		}
		if !bytes.Equal(p.Payload[2:], payloadFor(want)) {
			t.Errorf("packet %d: payload differs", i)
		}
		if ext := p.GetExtension(3); !bytes.Equal(ext, []byte{byte(want >> 8), byte(want)}) {
			t.Errorf("packet %d: extension %v", i, ext)
		}
		if i > 0 && p.SequenceNumber != below.pkts[i-1].SequenceNumber+1 {
			t.Errorf("RTX sequence numbers not consecutive: %d after %d", p.SequenceNumber, below.pkts[i-1].SequenceNumber)
		}
	}
}

func TestNACKResponderPlainAndPadding(t *testing.T) {
	w, below, nack := newTestResponder(t, 0, 0, 64<<10)
	sendSeqs(t, w, 1, 5)
	pad := rtp.Header{Version: 2, Padding: true, PaddingSize: 255, PayloadType: 96, SequenceNumber: 5, SSRC: 1000}
	if _, err := w.Write(&pad, nil, nil); err != nil {
		t.Fatal(err)
	}
	below.pkts = nil
	nack(2, 5)
	if len(below.pkts) != 2 {
		t.Fatalf("resent %d packets, want 2", len(below.pkts))
	}
	if p := below.pkts[0]; p.SSRC != 1000 || p.SequenceNumber != 2 || !bytes.Equal(p.Payload, payloadFor(2)) {
		t.Errorf("plain retransmission: ssrc %d seq %d", p.SSRC, p.SequenceNumber)
	}
	if p := below.pkts[1]; !p.Padding || p.Header.PaddingSize != 255 || len(p.Payload) != 0 {
		t.Errorf("padding retransmission: padding %v size %d payload %d", p.Padding, p.Header.PaddingSize, len(p.Payload))
	}

	// Over RTX the padding goes and only the original sequence number stays.
	w, below, nack = newTestResponder(t, 2000, 97, 64<<10)
	if _, err := w.Write(&pad, nil, nil); err != nil {
		t.Fatal(err)
	}
	below.pkts = nil
	nack(5)
	if len(below.pkts) != 1 || below.pkts[0].Padding || len(below.pkts[0].Payload) != 2 {
		t.Fatalf("RTX of padding: %+v", below.pkts)
	}
}

// Packets whose bytes were overwritten are not resent, and the rest are
// resent intact.
func TestNACKResponderOverwritten(t *testing.T) {
	w, below, nack := newTestResponder(t, 2000, 97, 4096) // ~30 packets of ~140 bytes
	sendSeqs(t, w, 0, 60)
	below.pkts = nil
	nack(10, 50, 59)
	if len(below.pkts) != 2 {
		t.Fatalf("resent %d packets, want 2 (10 is overwritten)", len(below.pkts))
	}
	for i, want := range []uint16{50, 59} {
		if p := below.pkts[i]; binary.BigEndian.Uint16(p.Payload) != want || !bytes.Equal(p.Payload[2:], payloadFor(want)) {
			t.Errorf("packet %d corrupt", i)
		}
	}
}

func TestNACKResponderStoreAllocs(t *testing.T) {
	r := newSendRing(ringSize{minBytes: 64 << 10, maxBytes: 64 << 10, ringPackets: 64}, monoClock())
	h := rtp.Header{Version: 2, PayloadType: 96, SSRC: 1000, Extensions: make([]rtp.Extension, 0, 2)}
	_ = h.SetExtension(3, []byte{0, 1})
	payload := make([]byte, 1100)
	var s resendScratch
	r.writer = interceptor.RTPWriterFunc(func(*rtp.Header, []byte, interceptor.Attributes) (int, error) { return 0, nil })
	r.rtxSSRC, r.rtxPT = 2000, 97
	r.resend(0, &s) // the scratch header's slices grow once
	if n := testing.AllocsPerRun(1000, func() {
		h.SequenceNumber++
		r.store(&h, payload)
		r.resend(h.SequenceNumber, &s)
	}); n != 0 {
		t.Errorf("%v allocations per stored and resent packet, want 0", n)
	}
}

// A ring that laps faster than its window grows to hold the window at the
// measured rate, keeping every packet it held; one that laps slower stays.
func TestSendRingGrowsToWindow(t *testing.T) {
	var now time.Duration
	r := newSendRing(ringSize{minBytes: 8 << 10, maxBytes: 64 << 10, ringPackets: 1024, window: time.Second}, func() time.Duration { return now })
	var s resendScratch
	r.writer = interceptor.RTPWriterFunc(func(*rtp.Header, []byte, interceptor.Attributes) (int, error) { return 0, nil })
	send := func(from, to uint16, step time.Duration) {
		for seq := from; seq != to; seq++ {
			h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, SSRC: 1000}
			r.store(&h, payloadFor(seq))
			now += step
		}
	}
	held := func(seq uint16) bool {
		e, ok := r.load(seq, &s)
		return ok && bytes.Equal(s.buf[int(e.hlen)+2:int(e.hlen)+2+int(e.plen)], payloadFor(seq))
	}
	// ~137-byte packets every 10 ms: ~13.7 kB/s, so 1 s needs ~17 kB.
	send(0, 200, 10*time.Millisecond)
	if n := len(r.buf); n < 16<<10 || n > 32<<10 {
		t.Fatalf("ring of %d bytes after 2 s at 13.7 kB/s, want 16-32 KiB", n)
	}
	for seq := uint16(200 - 100); seq < 200; seq++ { // the last second
		if !held(seq) {
			t.Fatalf("packet %d of the last second not held", seq)
		}
	}
	grown := len(r.buf)
	send(200, 2000, 10*time.Millisecond)
	if len(r.buf) != grown {
		t.Errorf("ring grew from %d to %d at a steady rate", grown, len(r.buf))
	}
	// Ten times the rate: grows to the cap, and still holds what it held.
	send(2000, 3000, time.Millisecond)
	if len(r.buf) != 64<<10 {
		t.Errorf("ring of %d bytes at 137 kB/s, want the 64 KiB cap", len(r.buf))
	}
	for seq := uint16(3000 - 300); seq < 3000; seq++ {
		if !held(seq) {
			t.Fatalf("packet %d not held after growing", seq)
		}
	}
	if held(10) {
		t.Error("packet 10 still held")
	}
}

// A grow copies the last lap to positions modulo the new size, so a packet
// stored in one piece can run over the end of the new buffer: every packet
// still held must come back whole (an index past the end crashed the
// server on a NACK at 25-50 calls under loadtest). The rate rises in steps
// after the ring has lapped, as when a keyframe burst or a probe follows a
// steady stream.
func TestSendRingGrowKeepsWrappedPackets(t *testing.T) {
	var now time.Duration
	r := newSendRing(ringSize{minBytes: 8 << 10, maxBytes: 640 << 10, ringPackets: 1024, window: time.Second}, func() time.Duration { return now })
	var s resendScratch
	payload := func(seq uint16) []byte { return bytes.Repeat([]byte{byte(seq)}, 200+int(seq)*337%1000) }
	grows, wrapped := 0, 0
	seq := uint16(0)
	for _, step := range []time.Duration{20 * time.Millisecond, 12 * time.Millisecond, 7 * time.Millisecond, 4 * time.Millisecond, 2 * time.Millisecond, time.Millisecond} {
		for range 1500 {
			size := len(r.buf)
			h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, SSRC: 1000}
			r.store(&h, payload(seq))
			now += step
			if len(r.buf) != size {
				grows++
				wrapped += checkRingHolds(t, r, &s, seq, payload)
			}
			seq++
		}
	}
	if grows < 4 || wrapped == 0 {
		t.Errorf("%d grow steps, %d packets over the end of a grown ring; want several and some", grows, wrapped)
	}
}

// checkRingHolds loads every packet of the index up to last that the ring
// still holds, compares it with what was stored, and returns how many run
// over the end of the buffer.
func checkRingHolds(t *testing.T, r *sendRing, s *resendScratch, last uint16, payload func(uint16) []byte) (wrapped int) {
	t.Helper()
	for back := range uint16(1024) {
		seq := last - back
		e, ok := r.load(seq, s)
		if !ok {
			continue
		}
		if int(e.at%uint64(len(r.buf)))+int(e.hlen)+int(e.plen) > len(r.buf) {
			wrapped++
		}
		var got rtp.Header
		if _, err := got.Unmarshal(s.buf[:e.hlen]); err != nil || got.SequenceNumber != seq {
			t.Fatalf("ring of %d: packet %d: header %v, %v", len(r.buf), seq, got.SequenceNumber, err)
		}
		if p := s.buf[int(e.hlen)+2 : int(e.hlen)+2+int(e.plen)]; !bytes.Equal(p, payload(seq)) {
			t.Fatalf("ring of %d: packet %d: payload differs", len(r.buf), seq)
		}
	}
	return wrapped
}
