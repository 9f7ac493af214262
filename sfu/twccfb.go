package sfu

import (
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/twcc"
	"github.com/pion/rtp"
)

// twccFeedback sends transport-wide congestion control feedback to a
// PeerConnection's remote sender (for its bandwidth estimate), like pion's
// twcc.SenderInterceptor and with its recorder, but without its per-packet
// costs: pion parses every header into a new rtp.Header kept in a new
// Attributes map and hands each packet to its feedback goroutine over an
// unbuffered channel (a goroutine switch per packet). Here the read loop
// finds the sequence number in the raw packet and records it under a
// mutex; the feedback goroutine only builds and sends feedback every
// twccInterval.
type twccFeedback struct {
	interceptor.NoOp
	start time.Time

	mu      sync.Mutex
	rec     *twcc.Recorder
	started bool
	closed  bool

	close chan struct{}
	wg    sync.WaitGroup

	// extID is the transport-cc extension's id on the PeerConnection's
	// incoming streams (BUNDLE: one for all), for arrived; 0 = none.
	extID atomic.Uint32
	// fromPion is passMark|transport sequence number of a packet the fast
	// path recorded and handed to pion as well: not recorded again.
	fromPion atomic.Uint32
}

// twccInterval is pion's (and libwebrtc's) feedback interval.
const twccInterval = 100 * time.Millisecond

// twccFeedbackFactory builds one twccFeedback per PeerConnection and, with
// hooks (a participant's own Registry), records it there.
type twccFeedbackFactory struct{ hooks *peerHooks }

func (f twccFeedbackFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	t := &twccFeedback{
		start: time.Now(),
		rec:   twcc.NewRecorder(rand.Uint32()), //nolint:gosec // an SSRC, not a secret
		close: make(chan struct{}),
	}
	if f.hooks != nil {
		f.hooks.twcc.Store(t)
	}
	return t, nil
}

// BindRTCPWriter starts the feedback goroutine (once per PeerConnection).
func (t *twccFeedback) BindRTCPWriter(w interceptor.RTCPWriter) interceptor.RTCPWriter {
	t.mu.Lock()
	if !t.started && !t.closed {
		t.started = true
		t.wg.Add(1)
		go t.loop(w)
	}
	t.mu.Unlock()
	return w
}

func (t *twccFeedback) loop(w interceptor.RTCPWriter) {
	defer t.wg.Done()
	tick := time.NewTicker(twccInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.close:
			return
		case <-tick.C:
		}
		t.mu.Lock()
		pkts := t.rec.BuildFeedbackPacket()
		t.mu.Unlock()
		if len(pkts) > 0 {
			_, _ = w.Write(pkts, nil)
		}
	}
}

// BindRemoteStream records the arrival of every packet carrying a
// transport-wide sequence number.
func (t *twccFeedback) BindRemoteStream(info *interceptor.StreamInfo, r interceptor.RTPReader) interceptor.RTPReader {
	var id uint8
	for _, x := range info.RTPHeaderExtensions {
		if x.URI == transportCCURI {
			id = uint8(x.ID) //nolint:gosec // extension ids are 1..255
		}
	}
	if id == 0 {
		return r
	}
	t.extID.Store(uint32(id))
	ssrc := info.SSRC
	return interceptor.RTPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		n, attr, err := r.Read(b, a)
		if err != nil {
			return n, attr, err
		}
		if seq, ok := transportSeq(rawExtension(b[:n], id)); ok && !t.passedBack(seq) {
			t.record(ssrc, seq)
		}
		return n, attr, nil
	})
}

// arrived records the arrival of pkt (decrypted, of stream ssrc) that
// the receive fast path (rxfast.go) took past pion's readers; passed:
// pion gets a copy of it, which is not to be recorded again.
func (t *twccFeedback) arrived(ssrc uint32, pkt []byte, passed bool) {
	id := uint8(t.extID.Load()) //nolint:gosec // stored from a uint8
	if id == 0 {
		return
	}
	if seq, ok := transportSeq(rawExtension(pkt, id)); ok {
		t.record(ssrc, seq)
		if passed {
			t.fromPion.Store(passMark | uint32(seq))
		}
	}
}

// passedBack tells the copy of a packet the fast path recorded.
func (t *twccFeedback) passedBack(seq uint16) bool {
	m := t.fromPion.Load()
	return m == passMark|uint32(seq) && t.fromPion.CompareAndSwap(m, 0)
}

func (t *twccFeedback) record(ssrc uint32, seq uint16) {
	at := time.Since(t.start).Microseconds()
	t.mu.Lock()
	t.rec.Record(ssrc, seq, at)
	t.mu.Unlock()
}

// Close stops the feedback goroutine.
func (t *twccFeedback) Close() error {
	t.mu.Lock()
	if !t.closed {
		t.closed = true
		close(t.close)
	}
	t.mu.Unlock()
	t.wg.Wait()
	return nil
}

// rawExtension returns the payload of header extension id in a marshalled
// RTP packet (RFC 8285 one- or two-byte form), or nil.
func rawExtension(b []byte, id uint8) []byte {
	if len(b) < 12 || b[0]&0x10 == 0 {
		return nil
	}
	off := 12 + 4*int(b[0]&0x0f)
	if len(b) < off+4 {
		return nil
	}
	profile := binary.BigEndian.Uint16(b[off:])
	n := 4 * int(binary.BigEndian.Uint16(b[off+2:]))
	off += 4
	if len(b) < off+n {
		return nil
	}
	ext := b[off : off+n]
	twoByte := profile == 0x1000 // as pion parses it (RFC 8285 allows app bits)
	if profile != 0xbede && !twoByte {
		return nil
	}
	for i := 0; i < len(ext); {
		if ext[i] == 0 { // padding
			i++
			continue
		}
		var eid uint8
		var l int
		if twoByte {
			if i+2 > len(ext) {
				return nil
			}
			eid, l = ext[i], int(ext[i+1])
			i += 2
		} else {
			eid, l = ext[i]>>4, int(ext[i]&0x0f)+1
			if eid == 15 || eid == 0 { // reserved, or padding with a length: stop
				return nil
			}
			i++
		}
		if i+l > len(ext) {
			return nil
		}
		if eid == id {
			return ext[i : i+l]
		}
		i += l
	}
	return nil
}

// twccSeqWriter numbers every outgoing packet with a transport-wide
// sequence number (the header extension the remote's feedback refers
// to), like pion's twcc.HeaderExtensionInterceptor but without allocating
// the extension's two bytes per packet: each stream has a buffer, and a
// packet written while another of the same stream is still on its way
// down (the prober's padding racing a forwarded packet) gets its own.
type twccSeqWriter struct {
	interceptor.NoOp
	next atomic.Uint32
}

type twccSeqFactory struct{}

func (twccSeqFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &twccSeqWriter{}, nil
}

func (t *twccSeqWriter) BindLocalStream(info *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	var id uint8
	for _, x := range info.RTPHeaderExtensions {
		if x.URI == transportCCURI {
			id = uint8(x.ID) //nolint:gosec // extension ids are 1..255
		}
	}
	if id == 0 {
		return w
	}
	var busy atomic.Bool
	var own [2]byte
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		if h == nil {
			return 0, errNilHeader
		}
		seq := uint16(t.next.Add(1) - 1) //nolint:gosec // wraps by design
		var buf []byte
		if busy.CompareAndSwap(false, true) {
			defer busy.Store(false)
			buf = own[:]
		} else {
			buf = make([]byte, 2)
		}
		binary.BigEndian.PutUint16(buf, seq)
		if err := h.SetExtension(id, buf); err != nil {
			return 0, err
		}
		return w.Write(h, payload, a)
	})
}

var errNilHeader = errors.New("sfu: nil RTP header")
