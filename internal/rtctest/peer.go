// Package rtctest provides a pion WebRTC client for tests: it publishes
// audio and video tracks carrying recognisable payloads and records what it
// receives, so tests can check that media crossed the SFU intact.
package rtctest

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/interceptor/pkg/stats"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Options configures a Peer.
type Options struct {
	ICEServers []webrtc.ICEServer
	RelayOnly  bool
	AudioOnly  bool                        // publish no video track (and offer no video)
	Configure  func(*webrtc.SettingEngine) // e.g. SetNet for vnet tests
	// Stats keeps pion's statistics of the outgoing streams, round trips
	// included (OutboundStats).
	Stats bool
}

// Peer is a test client with one PeerConnection.
type Peer struct {
	t     testing.TB
	PC    *webrtc.PeerConnection
	Audio *webrtc.TrackLocalStaticRTP
	Video *webrtc.TrackLocalStaticRTP

	plis    atomic.Int64 // PLI/FIR received on the video sender
	sent    atomic.Int64 // video packets handed to the video track
	stop    chan struct{}
	wg      sync.WaitGroup
	stopped sync.Once

	mu       sync.Mutex
	closed   bool
	received map[webrtc.RTPCodecType]*Received
	remote   map[webrtc.RTPCodecType]*webrtc.TrackRemote
	changed  chan struct{}
	reports  []ReportAt    // reception report blocks about our streams
	stats    *stats.Getter // nil unless Options.Stats
}

// Received summarises the packets that arrived on one remote track.
type Received struct {
	Packets  int
	Corrupt  int // payloads that do not match what a Peer sends
	LastSeq  uint16
	SeqJumps int // sequence numbers that did not follow the previous one
	Padding  int // padding-only packets (the server's bandwidth probes), not counted in Packets

	// Loss as a receiver sees it: a packet that comes late (reordered)
	// is not lost, and one that comes twice counts once.
	Late       int   // arrived after a higher sequence number
	Duplicates int   // arrived again (within the last 32,768 numbers)
	first      int64 // extended sequence number of the first packet
	highest    int64 // highest extended sequence number seen
	seen       *[1 << 16 / 64]uint64
}

// Lost is how many sequence numbers between the first and the highest
// one seen never arrived (padding included, as it takes numbers too).
func (r Received) Lost() int {
	if r.seen == nil {
		return 0
	}
	return int(r.highest-r.first+1) - (r.Packets + r.Padding - r.Duplicates)
}

// track notes seq in the loss accounting.
func (r *Received) track(seq uint16) {
	if r.seen == nil {
		r.seen = new([1 << 16 / 64]uint64)
		r.first, r.highest = int64(seq), int64(seq)
		r.seen[seq/64] |= 1 << (seq % 64)
		return
	}
	ext := r.highest + int64(int16(seq-uint16(r.highest)))
	w, b := &r.seen[seq/64], uint64(1)<<(seq%64)
	switch {
	case ext > r.highest:
		// Forget what the numbers up to ext meant 65,536 packets ago.
		for s := r.highest + 1; s <= ext; s++ {
			r.seen[uint16(s)/64] &^= 1 << (uint16(s) % 64)
		}
		r.highest = ext
	case *w&b != 0:
		r.Duplicates++
		return
	default:
		r.Late++
		r.first = min(r.first, ext)
	}
	*w |= b
}

// NewPeer creates a client PeerConnection with a sendrecv audio and video
// transceiver. It is closed when the test ends.
func NewPeer(t testing.TB, o Options) *Peer {
	t.Helper()
	return NewPeerWith(t, o)
}

// Close stops sending and closes the PeerConnection; idempotent.
func (p *Peer) Close() {
	p.stopped.Do(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		close(p.stop)
		_ = p.PC.Close()
		p.wg.Wait()
	})
}

func (p *Peer) readRTCP(s *webrtc.RTPSender) {
	defer p.wg.Done()
	var ssrc uint32
	if enc := s.GetParameters().Encodings; len(enc) > 0 {
		ssrc = uint32(enc[0].SSRC)
	}
	for {
		pkts, _, err := s.ReadRTCP()
		if err != nil {
			return
		}
		for _, pkt := range pkts {
			p.noteReports(pkt, ssrc)
			switch pkt.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				p.plis.Add(1)
			}
		}
	}
}

// KeyframeRequests is the number of PLI/FIR this peer's senders received.
func (p *Peer) KeyframeRequests() int64 { return p.plis.Load() }

// Payload returns the payload a Peer sends as packet n of a track of kind.
// Its length varies with n so truncation shows too.
func Payload(kind webrtc.RTPCodecType, n uint32) []byte {
	size := 20 + int(n%200)
	b := make([]byte, size)
	binary.BigEndian.PutUint32(b, n)
	for i := 4; i < size; i++ {
		b[i] = byte(n) ^ byte(i) ^ byte(kind)
	}
	return b
}

func validPayload(kind webrtc.RTPCodecType, b []byte) bool {
	if len(b) < 4 {
		return false
	}
	want := Payload(kind, binary.BigEndian.Uint32(b))
	return string(want) == string(b)
}

// StartSending sends audio and video packets (50 per second each) until
// the peer is closed or stop is called.
func (p *Peer) StartSending() (stop func()) {
	done := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for n := uint32(0); ; n++ {
			select {
			case <-p.stop:
				return
			case <-done:
				return
			case <-tick.C:
			}
			p.send(p.Audio, webrtc.RTPCodecTypeAudio, n, n*960)
			p.send(p.Video, webrtc.RTPCodecTypeVideo, n, n*1800)
			p.sent.Add(1)
		}
	}()
	var once sync.Once
	return func() { once.Do(func() { close(done) }) }
}

// SentVideo is how many video packets StartSending has written so far.
func (p *Peer) SentVideo() int64 { return p.sent.Load() }

func (p *Peer) send(tr *webrtc.TrackLocalStaticRTP, kind webrtc.RTPCodecType, n, ts uint32) {
	pkt := &rtp.Packet{
		Header:  rtp.Header{Version: 2, Marker: true, SequenceNumber: uint16(n), Timestamp: ts},
		Payload: Payload(kind, n),
	}
	_ = tr.WriteRTP(pkt)
}

// SendPLI asks the remote side for a keyframe of the received video track.
func (p *Peer) SendPLI() error {
	p.mu.Lock()
	tr := p.remote[webrtc.RTPCodecTypeVideo]
	p.mu.Unlock()
	if tr == nil {
		return fmt.Errorf("no remote video track yet")
	}
	return p.PC.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: uint32(tr.SSRC())}})
}

func (p *Peer) onTrack(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	kind := tr.Kind()
	p.readTrack(tr, func(pkt *rtp.Packet) { p.record(kind, pkt, validPayload(kind, pkt.Payload)) })
}

// readTrack registers tr and hands each of its packets to each until the
// track ends; the peer's Close waits for it.
func (p *Peer) readTrack(tr *webrtc.TrackRemote, each func(*rtp.Packet)) {
	kind := tr.Kind()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.wg.Add(1)
	defer p.wg.Done()
	p.remote[kind] = tr
	if p.received[kind] == nil {
		p.received[kind] = &Received{}
	}
	p.mu.Unlock()
	buf := make([]byte, 1500)
	var pkt rtp.Packet
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		if pkt.Unmarshal(buf[:n]) != nil {
			continue
		}
		each(&pkt)
	}
}

// isPadding reports a padding-only packet (or its retransmission: a
// repair of padding carries no payload either).
func isPadding(pkt *rtp.Packet) bool { return len(pkt.Payload) == 0 }

// record counts one packet of kind; valid says its payload is intact.
func (p *Peer) record(kind webrtc.RTPCodecType, pkt *rtp.Packet, valid bool) {
	p.mu.Lock()
	r := p.received[kind]
	if (r.Packets > 0 || r.Padding > 0) && pkt.SequenceNumber != r.LastSeq+1 {
		r.SeqJumps++
	}
	r.LastSeq = pkt.SequenceNumber
	r.track(pkt.SequenceNumber)
	if isPadding(pkt) {
		// As a browser does: padding takes a sequence number and is
		// dropped before the decoder.
		r.Padding++
		p.mu.Unlock()
		return
	}
	r.Packets++
	if !valid {
		r.Corrupt++
	}
	p.mu.Unlock()
	select {
	case p.changed <- struct{}{}:
	default:
	}
}

// Received returns a snapshot of what arrived on the remote track of kind.
func (p *Peer) Received(kind webrtc.RTPCodecType) Received {
	p.mu.Lock()
	defer p.mu.Unlock()
	if r := p.received[kind]; r != nil {
		return *r
	}
	return Received{}
}

// WaitPackets waits until at least n packets of kind arrived.
func (p *Peer) WaitPackets(kind webrtc.RTPCodecType, n int, timeout time.Duration) error {
	deadline := time.After(timeout)
	poll := time.NewTicker(20 * time.Millisecond)
	defer poll.Stop()
	for {
		if got := p.Received(kind).Packets; got >= n {
			return nil
		}
		select {
		case <-p.changed:
		case <-poll.C:
		case <-deadline:
			return fmt.Errorf("%s: got %d packets, want %d within %v", kind, p.Received(kind).Packets, n, timeout)
		}
	}
}
