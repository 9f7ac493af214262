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
	i, _ := nackResponderFactory{ringSize{minBytes: ringBytes, maxBytes: ringBytes, ringPackets: 64}}.NewInterceptor("")
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

// Growing moves the last lap's bytes to their absolute positions in the
// larger ring, where one packet may run past its end and go on at the
// beginning: every packet still indexed loads whole (this panicked with
// "slice bounds out of range" in a 50-call load test, where NACKs came
// in just after a ring grew).
func TestSendRingLoadsPacketsWrappedByGrowth(t *testing.T) {
	for trial := 0; trial < 30; trial++ {
		var now time.Duration
		r := newSendRing(ringSize{minBytes: 8 << 10, maxBytes: 256 << 10, ringPackets: 1024, window: time.Second},
			func() time.Duration { return now })
		var s resendScratch
		seq := uint16(0)
		size := func(seq uint16) int { return 60 + (int(seq)*37+trial*101)%1100 }
		step := time.Duration(40+2*trial) * time.Millisecond // growth steps of 1.25-2x
		for grown := 0; grown < 3 && seq < 10000; {
			before := len(r.buf)
			h := rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: seq, SSRC: 1000}
			r.store(&h, bytes.Repeat([]byte{byte(seq)}, size(seq)))
			now += step
			seq++
			if len(r.buf) == before {
				continue
			}
			grown++
			for back := uint16(1); back < 1024 && back <= seq; back++ {
				q := seq - back
				e, ok := r.load(q, &s)
				if !ok {
					continue
				}
				got := s.buf[int(e.hlen)+2 : int(e.hlen)+2+int(e.plen)]
				if !bytes.Equal(got, bytes.Repeat([]byte{byte(q)}, size(q))) {
					t.Fatalf("trial %d: packet %d after growing to %d bytes: payload differs", trial, q, len(r.buf))
				}
				var hdr rtp.Header
				if _, err := hdr.Unmarshal(s.buf[:e.hlen]); err != nil || hdr.SequenceNumber != q {
					t.Fatalf("trial %d: packet %d after growing: header %v, %v", trial, q, hdr.SequenceNumber, err)
				}
			}
		}
	}
}
