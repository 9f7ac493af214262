package sfu

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/transport/v4/replaydetector"
)

// The receive fast path (issue 11). pion hands a received RTP packet
// through five buffers and goroutines (UDP mux, ICE, DTLS/SRTP mux, SRTP
// session, interceptors) before the upTrack's read loop forwards it. Here
// the goroutine that reads the media socket (fastConn, rxfast_conn.go)
// takes an SRTP packet of a known stream from a known address, decrypts
// it with its own srtp.Context built from the PeerConnection's keys
// (srtpkeys.go), records its arrival for transport-wide feedback and
// forwards it to the subscribers at once; then it reads the next datagram.
// pion keeps everything else: STUN, DTLS, all RTCP, and RTP from
// addresses or SSRCs not (yet) registered here (before the keys or the
// selected candidate pair are known, an unknown SSRC, a participant
// without keys).
//
// A packet of a registered stream that fails authentication is dropped
// and counted: pion, with the same keys, would drop it too. A stream that
// fails fastReleaseAfter times before any packet of it decrypted is given
// back to pion (the stream is unregistered): a sender our context cannot
// follow from the start (say, its rollover counter moved while pion had
// the stream) keeps working on pion's path. Once a stream has decrypted,
// failures never release it: else a forger who can send from the peer's
// address could push it to the slower path at will.

// pion must be able to take a stream back at any time: when the pair
// moves to a transport the fast path does not read (ICE-TCP), when a
// stream is released, when the peer is unregistered. pion's SRTP context
// guesses a packet's rollover counter from the last packet it decrypted
// (within 2^15 sequence numbers, RFC 3711 3.3.1), so after 2^15 packets
// it did not see (110 s of video) it would reject the stream for good.
// And pion's ICE-lite agent calls a pair disconnected when nothing
// arrived on it for the disconnected timeout; RTP the fast path takes is
// not seen there (a publisher that receives nothing may send little else
// for seconds). Both are served by one thing: every passEvery (a quarter
// of the disconnected timeout, at most fastPassMax) and every
// fastPassPackets packets of a stream, the socket reader, after
// forwarding a packet, hands pion a copy of it as it arrived
// (encrypted). pion decrypts it, which keeps its context in step, and its
// agent counts it as traffic; the track's read loop and the transport-wide
// feedback recognise the copy and drop it (upTrack.fromPion,
// twccFeedback.fromPion), so it is neither forwarded nor counted twice.
const (
	fastPassMax     = time.Second
	fastPassMin     = 50 * time.Millisecond
	fastPassPackets = 4096 // well under 2^15
)

// fastReleaseAfter consecutive authentication failures of a stream that
// never decrypted give it back to pion.
const fastReleaseAfter = 64

// fastTable is the registry the socket readers consult for every
// datagram: remote address -> peer, copy-on-write behind an atomic
// pointer (lookups take no lock and allocate nothing).
type fastTable struct {
	mu    sync.Mutex // serialises writers of peers
	peers atomic.Pointer[map[netip.AddrPort]*fastPeer]

	passEvery     time.Duration // pion is handed a copy of a stream's RTP this often
	passPackets   uint32        // ... and at least every passPackets packets
	rtcpPassEvery time.Duration // pion is left a peer's RTCP packet this often (rtcpfast.go)

	stats fastCounters
	tx    txCounters // the send fast path's (txfast.go)
	bufs  sync.Pool  // of *[]byte (txBufSize), for the send fast path
}

// fastCounters count RTP datagrams by the path they took.
type fastCounters struct {
	fast, repairs, fallback, authFailures, dropped, released, passed, overflow atomic.Uint64
	rtcp, rtcpPassed, rtcpFailures, rtcpDropped                                atomic.Uint64
}

// verdict is what handle did with a datagram.
type verdict int

const (
	toPion    verdict = iota // not taken: pion reads it as it came
	taken                    // handled; read the next datagram
	takenPass                // handled; pion reads the copy kept before decryption
)

// ReceivePathStats counts the RTP packets the media sockets received, by
// the path they took (see Config.PionReceive).
type ReceivePathStats struct {
	// Fast were decrypted and forwarded by the socket reader.
	Fast uint64
	// Repairs are the Fast ones that came as retransmissions (RTX).
	Repairs uint64
	// Fallback went through pion (a stream or address not registered).
	Fallback uint64
	// AuthFailures failed SRTP authentication on the fast path and were
	// dropped.
	AuthFailures uint64
	// Dropped were replays (or too short) for the fast path's SRTP
	// context, or RTX padding, and were dropped.
	Dropped uint64
	// Released streams were given back to pion after repeated failures.
	Released uint64
	// Passed were Fast ones of which pion was also handed a copy (to keep
	// its SRTP context and ICE agent in step; it drops them).
	Passed uint64
	// Overflow counts datagrams (of any kind) for pion that a media
	// reader dropped because pion's read loop was handoffQueue datagrams behind
	// (several readers per address: Config.MediaReaders, readers.go).
	Overflow uint64
	// RTCP counts SRTCP packets the socket reader decrypted and handled
	// itself (rtcpfast.go; not with Config.PionRTCP).
	RTCP uint64
	// RTCPPassed are RTCP packets of registered peers left to pion to keep
	// its ICE agent counting their traffic.
	RTCPPassed uint64
	// RTCPFailures failed SRTCP authentication on the fast path and were
	// dropped.
	RTCPFailures uint64
	// RTCPDropped were replays (or too short) for the fast path's SRTCP
	// context, or did not parse, and were dropped.
	RTCPDropped uint64
}

// newFastTable: disconnected is the ICE disconnected timeout.
func newFastTable(disconnected time.Duration) *fastTable {
	every := min(max(disconnected/4, fastPassMin), fastPassMax)
	t := &fastTable{passEvery: every, passPackets: fastPassPackets, rtcpPassEvery: every}
	m := map[netip.AddrPort]*fastPeer{}
	t.peers.Store(&m)
	return t
}

func (t *fastTable) snapshot() ReceivePathStats {
	return ReceivePathStats{Fast: t.stats.fast.Load(), Repairs: t.stats.repairs.Load(), Fallback: t.stats.fallback.Load(),
		AuthFailures: t.stats.authFailures.Load(), Dropped: t.stats.dropped.Load(), Released: t.stats.released.Load(),
		Passed: t.stats.passed.Load(), Overflow: t.stats.overflow.Load(),
		RTCP: t.stats.rtcp.Load(), RTCPPassed: t.stats.rtcpPassed.Load(), RTCPFailures: t.stats.rtcpFailures.Load(),
		RTCPDropped: t.stats.rtcpDropped.Load()}
}

// canonical is the form addresses are kept in (pion's mux unmaps too).
func canonical(a netip.AddrPort) netip.AddrPort {
	if a.Addr().Is4In6() {
		return netip.AddrPortFrom(a.Addr().Unmap(), a.Port())
	}
	return a
}

// isRTP tells RTP from STUN, DTLS (first byte) and RTCP (packet types
// 192-223 in the second byte, marker bit included), as pion's mux does
// (RFC 7983, RFC 5761).
func isRTP(b []byte) bool {
	return len(b) >= 12 && b[0]&0xc0 == 0x80 && (b[1] < 192 || b[1] > 223)
}

// handle takes b (a datagram from from) if it belongs to the fast path;
// toPion hands it to pion unchanged. b may be overwritten when it is
// taken. With takenPass, scratch[:n] holds b as it came, for pion.
func (t *fastTable) handle(b []byte, from netip.AddrPort, scratch []byte, via *fastConn) (v verdict, n int) {
	if !isRTP(b) {
		if isRTCP(b) {
			if p := (*t.peers.Load())[canonical(from)]; p != nil && p.receiveRTCP(b) {
				return taken, 0
			}
		}
		return toPion, 0
	}
	if p := (*t.peers.Load())[canonical(from)]; p != nil {
		if ok, n := p.receive(b, scratch, via, from); ok {
			if n > 0 {
				return takenPass, n
			}
			return taken, 0
		}
	}
	t.stats.fallback.Add(1)
	return toPion, 0
}

// route makes p's packets go out through via to from, the socket and
// address its media arrives on (the send fast path, txfast.go). A peer
// unregistered meanwhile (it clears the route after leaving the table)
// keeps none.
func (t *fastTable) route(p *fastPeer, via *fastConn, from netip.AddrPort) {
	r := &txRoute{conn: via, to: from}
	p.tx.Store(r)
	if (*t.peers.Load())[canonical(from)] != p {
		p.tx.CompareAndSwap(r, nil)
	}
}

// getBuf returns a buffer for one packet of the send fast path.
func (t *fastTable) getBuf() *[]byte {
	if b, ok := t.bufs.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, txBufSize)
	return &b
}

func (t *fastTable) putBuf(b *[]byte) { t.bufs.Put(b) }

func (t *fastTable) txSnapshot() SendPathStats {
	return SendPathStats{Fast: t.tx.fast.Load(), Pion: t.tx.pion.Load(), Passed: t.tx.passed.Load(), Errors: t.tx.errors.Load(),
		Dropped: t.tx.dropped.Load()}
}

// add maps addr to p unless another peer has it; false if it has.
func (t *fastTable) add(addr netip.AddrPort, p *fastPeer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.peers.Load()
	if q, ok := old[addr]; ok {
		return q == p
	}
	next := make(map[netip.AddrPort]*fastPeer, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[addr] = p
	t.peers.Store(&next)
	return true
}

// remove unmaps addr if it maps to p.
func (t *fastTable) remove(addr netip.AddrPort, p *fastPeer) {
	t.mu.Lock()
	defer t.mu.Unlock()
	old := *t.peers.Load()
	if old[addr] != p {
		return
	}
	next := make(map[netip.AddrPort]*fastPeer, len(old))
	for k, v := range old {
		if k != addr {
			next[k] = v
		}
	}
	t.peers.Store(&next)
}

// arrivalRecorder takes the arrival of every packet for transport-wide
// congestion control feedback (twccFeedback).
type arrivalRecorder interface {
	// passed: pion is handed a copy of pkt and is to ignore it.
	arrived(ssrc uint32, pkt []byte, passed bool)
}

// fastPeer is one PeerConnection on the fast path: its SRTP context and
// streams. Its address in the table changes with the selected candidate
// pair (rxfast_participant.go).
type fastPeer struct {
	tab *fastTable

	// Set once, before the peer is first put in the table.
	ctx  *srtp.Context
	twcc arrivalRecorder // may be nil

	mu      sync.Mutex // guards ctx's state, hdr and rtcpHdr: a decryption at a time
	hdr     rtp.Header
	rtcpHdr rtcp.Header

	// The RTCP fast path (rtcpfast.go); rtcp is nil if it is off.
	rtcp     *rtcpTargets
	epoch    time.Time
	rtcpPass atomic.Int64 // since epoch: when pion was last left an RTCP packet

	tx atomic.Pointer[txRoute] // where the send fast path writes; nil: pion's path

	streams atomic.Pointer[[]*fastStream] // copy-on-write

	regMu  sync.Mutex // guards the fields below
	addr   netip.AddrPort
	inTab  bool
	closed bool
}

// fastStream is one SSRC of a peer: a media stream or its RTX stream.
type fastStream struct {
	ssrc  uint32
	up    *upTrack
	rtx   bool         // a repair stream (RFC 4588): unwrap before forwarding
	media uint32       // the media SSRC an RTX packet is restored to
	pt    uint8        // the media payload type an RTX packet is restored to
	fails atomic.Int32 // consecutive authentication failures
	ok    atomic.Bool  // a packet decrypted
	// pion is handed a copy of the next packet (passDue); it was last
	// handed one at lastPass (up's arrival clock), sincePass packets ago.
	passDue   atomic.Bool
	lastPass  atomic.Int64
	sincePass atomic.Uint32
}

func newFastPeer(t *fastTable) *fastPeer { return &fastPeer{tab: t, epoch: time.Now()} }

// stream finds ssrc's stream (nil if not registered).
func (p *fastPeer) stream(ssrc uint32) *fastStream {
	s := p.streams.Load()
	if s == nil {
		return nil
	}
	for _, st := range *s {
		if st.ssrc == ssrc {
			return st
		}
	}
	return nil
}

// receive decrypts and forwards b if its SSRC is registered (ok). When a
// copy for pion is due, b as it came is kept in scratch first and n is
// its length. A packet that decrypts makes via and from the peer's send
// route (txfast.go): only an authenticated packet may move it, so a
// datagram forged with the peer's address cannot send its media to a
// socket or address it does not use.
func (p *fastPeer) receive(b, scratch []byte, via *fastConn, from netip.AddrPort) (ok bool, n int) {
	st := p.stream(binary.BigEndian.Uint32(b[8:12]))
	if st == nil {
		return false, 0
	}
	if st.passDue.Load() && len(b) <= len(scratch) {
		n = copy(scratch, b)
	}
	p.mu.Lock()
	pkt, err := p.ctx.DecryptRTP(b, b, &p.hdr)
	p.mu.Unlock()
	if err != nil {
		p.failed(st, err)
		return true, 0
	}
	if st.fails.Load() != 0 {
		st.fails.Store(0)
	}
	if r := p.tx.Load(); via != nil && (r == nil || r.conn != via || r.to != from) {
		p.tab.route(p, via, from)
	}
	if !st.ok.Load() {
		st.ok.Store(true)
	}
	if p.twcc != nil {
		p.twcc.arrived(st.ssrc, pkt, n > 0)
	}
	if st.rtx {
		if pkt = unwrapRTX(pkt, st.pt, st.media); pkt == nil {
			p.tab.stats.dropped.Add(1) // padding only: a bandwidth probe
			return true, p.passed(st, n, 0)
		}
		p.tab.stats.repairs.Add(1)
	}
	p.tab.stats.fast.Add(1)
	if n > 0 {
		// Before the copy reaches pion: its read loop is to drop it.
		st.up.fromPion.Store(passMark | uint32(binary.BigEndian.Uint16(pkt[2:4])))
	}
	return true, p.passed(st, n, st.up.deliver(pkt, st.rtx))
}

// passMark marks upTrack.fromPion and twccFeedback.fromPion as set.
const passMark = 1 << 16

// passed schedules the next copy for pion after a packet of st arrived
// at at (0: not known); n > 0 when this one is copied. It returns n.
func (p *fastPeer) passed(st *fastStream, n int, at time.Duration) int {
	if n > 0 {
		p.tab.stats.passed.Add(1)
		st.passDue.Store(false)
		st.sincePass.Store(0)
		if at > 0 {
			st.lastPass.Store(int64(at))
		}
		return n
	}
	if st.sincePass.Add(1) >= p.tab.passPackets || (at > 0 && at-time.Duration(st.lastPass.Load()) >= p.tab.passEvery) {
		st.passDue.Store(true)
	}
	return 0
}

// failed counts a packet that did not decrypt; a stream that never
// decrypted and keeps failing goes back to pion.
func (p *fastPeer) failed(st *fastStream, err error) {
	if !errors.Is(err, srtp.ErrFailedToVerifyAuthTag) {
		p.tab.stats.dropped.Add(1)
		return
	}
	p.tab.stats.authFailures.Add(1)
	if !st.ok.Load() && st.fails.Add(1) == fastReleaseAfter {
		p.tab.stats.released.Add(1)
		p.removeStreams(func(s *fastStream) bool { return s == st })
	}
}

// unwrapRTX restores a decrypted RTX packet (RFC 4588) to the media
// packet it repairs, in place, as pion's RTPReceiver does: the original
// sequence number from the payload's first two bytes, the media payload
// type and SSRC. It returns nil for a packet without an original one
// (padding only, a bandwidth probe), which pion drops too.
func unwrapRTX(pkt []byte, pt uint8, ssrc uint32) []byte {
	n := len(pkt)
	hdr := 12 + 4*int(pkt[0]&0x0f)
	if pkt[0]&0x10 != 0 {
		if n < hdr+4 {
			return nil
		}
		hdr += 4 * (1 + int(binary.BigEndian.Uint16(pkt[hdr+2:])))
	}
	pad := 0
	if pkt[0]&0x20 != 0 {
		pad = int(pkt[n-1])
	}
	if n-hdr-pad < 2 {
		return nil
	}
	pkt[1] = pkt[1]&0x80 | pt&0x7f
	pkt[2], pkt[3] = pkt[hdr], pkt[hdr+1]
	binary.BigEndian.PutUint32(pkt[8:], ssrc)
	copy(pkt[hdr:], pkt[hdr+2:])
	return pkt[:n-2]
}

// addStream registers ssrc of up (rtx: its repair stream, restored to
// media/pt). A stream already registered is replaced.
func (p *fastPeer) addStream(st *fastStream) {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	if p.closed {
		return
	}
	var old []*fastStream
	if s := p.streams.Load(); s != nil {
		old = *s
	}
	next := make([]*fastStream, 0, len(old)+1)
	for _, s := range old {
		if s.ssrc != st.ssrc {
			next = append(next, s)
		}
	}
	next = append(next, st)
	p.streams.Store(&next)
}

// removeStreams unregisters the streams drop selects.
func (p *fastPeer) removeStreams(drop func(*fastStream) bool) {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	s := p.streams.Load()
	if s == nil {
		return
	}
	next := make([]*fastStream, 0, len(*s))
	for _, st := range *s {
		if !drop(st) {
			next = append(next, st)
		}
	}
	p.streams.Store(&next)
}

// setKeys builds the peer's SRTP context for the remote side's packets,
// once; later calls change nothing. The replay window is pion's
// (srtpReplayWindow in sfu.go).
func (p *fastPeer) setKeys(profile srtp.ProtectionProfile, key, salt []byte, twcc arrivalRecorder) error {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	if p.ctx != nil {
		return nil
	}
	ctx, err := srtp.CreateContext(key, salt, profile,
		srtp.SRTPReplayDetectorFactory(func() replaydetector.ReplayDetector {
			return newRingReplay(srtpReplayWindow, srtpMaxIndex)
		}),
		srtp.SRTCPReplayProtection(srtcpReplayWindow))
	if err != nil {
		return err
	}
	p.ctx, p.twcc = ctx, twcc
	return nil
}

var (
	errFastClosed = errors.New("sfu: fast path: peer closed")
	errFastNoKeys = errors.New("sfu: fast path: no SRTP keys")
	errFastTaken  = errors.New("sfu: fast path: address registered by another peer")
)

// register routes RTP from addr to the peer (once it has keys); an
// earlier address is unregistered. An address another peer has is
// refused (errFastTaken): that peer's packets stay where they are, and
// this peer's go through pion.
func (p *fastPeer) register(addr netip.AddrPort) error {
	addr = canonical(addr)
	p.regMu.Lock()
	defer p.regMu.Unlock()
	switch {
	case p.closed:
		return errFastClosed
	case p.ctx == nil:
		return errFastNoKeys
	case p.inTab && p.addr == addr:
		return nil
	}
	if p.inTab {
		p.tab.remove(p.addr, p)
		p.tx.Store(nil) // until media comes from the new address
	}
	p.addr, p.inTab = addr, p.tab.add(addr, p)
	if !p.inTab {
		return errFastTaken
	}
	return nil
}

// unregister sends the peer's packets back through pion.
func (p *fastPeer) unregister() {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	if p.inTab {
		p.tab.remove(p.addr, p)
		p.inTab = false
	}
	p.tx.Store(nil)
}

// registered returns the address the peer is registered under.
func (p *fastPeer) registered() (netip.AddrPort, bool) {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	return p.addr, p.inTab
}

// close unregisters the peer for good (atomically: a register racing
// with it cannot put it back).
func (p *fastPeer) close() {
	p.regMu.Lock()
	defer p.regMu.Unlock()
	p.closed = true
	if p.inTab {
		p.tab.remove(p.addr, p)
		p.inTab = false
	}
	p.tx.Store(nil)
	p.streams.Store(nil)
}
