package sfu

import (
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
)

// The send fast path (issue 11), the counterpart of rxfast.go. Below the
// interceptors, pion sends an RTP packet through its SRTP session (a
// pooled buffer, a session-wide lock around encryption), its DTLS/SRTP
// demultiplexer endpoint, the ICE connection (the selected pair, its
// statistics) and the UDP mux's per-connection socket, which looks the
// remote address up once more before the system call (3-4 % of the
// server's CPU per packet, measured against this path: README, "Send
// fast path"). Here the
// innermost interceptor (txWriter, added first in newRegistry so it wraps
// pion's writer) encrypts the packet with its own srtp.Context, built
// from the PeerConnection's keys (srtpkeys.go), and writes it to the
// socket the peer's media arrives on, to the address it arrives from:
// the route the receive fast path records (fastPeer.tx). Everything above
// it (TWCC sequence numbers, congestion control, sender reports, the NACK
// responder's copy) is unchanged, and every packet a participant is sent
// still passes through all of it.
//
// pion sends the packet instead, as before, when there is no route (no
// keys, no packet received yet on the selected pair, ICE-TCP, the peer
// unregistered or closed), and for an SSRC the interceptor does not know.
//
// pion must be able to take a stream back at any time (the route goes
// away on an ICE restart). Its SRTP context guesses each packet's
// rollover counter (ROC) from the last packet it encrypted, within 2^15
// sequence numbers, and starts a stream it has not seen at ROC 0, as the
// receiver does. So a stream starts with the first packet pion actually
// encrypts (before DTLS is up it drops what it is given), everything
// before that goes to pion, and at least one packet in every
// txPassPackets after it goes to pion too; a packet from before the
// start is dropped (no receiver could decrypt it, and pion's context,
// which cannot tell it from a jump ahead while its counter is small,
// would be thrown off by it). Our context is told the ROC (SetROC)
// whenever pion sent the stream's previous packet, from the extended
// sequence number the writer keeps for every packet of the stream,
// whichever way it went; in between it guesses from its own last packet,
// as pion's does. Only a packet that authenticated on the receive fast
// path sets or moves the route (rxfast.go), so a forged datagram cannot
// turn a peer's media to another socket or address.

// txPassPackets: pion encrypts and sends at least one packet of a stream
// in this many sequence numbers (well under 2^15).
const txPassPackets = 4096

// txRoute is where a peer's packets go on the send fast path: the socket
// its media arrives on (one of K readers share the address and port) and
// the address it arrives from (the selected pair's remote address).
type txRoute struct {
	conn *fastConn
	to   netip.AddrPort
}

// SendPathStats counts the RTP packets sent to participants by the path
// they took (see Config.PionSend).
type SendPathStats struct {
	// Fast were encrypted and written by the send fast path.
	Fast uint64
	// Pion went through pion's SRTP session and ICE connection: no route
	// yet (or any more), or an unknown SSRC.
	Pion uint64
	// Passed are the Pion ones sent that way only to keep pion's SRTP
	// context in step (one in every txPassPackets).
	Passed uint64
	// Errors were not sent: encryption or the socket write failed.
	Errors uint64
	// Dropped came from before their stream's first packet (reordered
	// late): no receiver could decrypt them.
	Dropped uint64
}

type txCounters struct {
	fast, pion, passed, errors, dropped atomic.Uint64
}

// txSender is one PeerConnection's send fast path: an interceptor whose
// local-stream writers (txWriter) encrypt and send themselves once it is
// enabled with the keys and the peer whose route they follow.
type txSender struct {
	interceptor.NoOp
	keys atomic.Pointer[sessionKeys]
	peer atomic.Pointer[fastPeer]
	tab  *fastTable // buffers and counters, SFU-wide
	pass uint64     // txPassPackets
}

// txSenderFactory builds the PeerConnection's txSender and hands it to
// its hooks.
type txSenderFactory struct {
	hooks *peerHooks
	tab   *fastTable
}

func (f txSenderFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	t := &txSender{tab: f.tab, pass: txPassPackets}
	if f.hooks != nil {
		f.hooks.tx.Store(t)
	}
	return t, nil
}

// enable starts sending on the fast path with keys (the local write key)
// wherever p has a route. Later calls change nothing.
func (t *txSender) enable(keys *sessionKeys, p *fastPeer) {
	if t.peer.Load() != nil {
		return
	}
	t.keys.Store(keys)
	t.peer.Store(p)
}

// route is where to send now, or nil for pion's path.
func (t *txSender) route() *txRoute {
	if p := t.peer.Load(); p != nil {
		return p.tx.Load()
	}
	return nil
}

// BindLocalStream puts a txWriter for the stream's SSRC and its RTX SSRC
// in front of pion's writer.
func (t *txSender) BindLocalStream(info *interceptor.StreamInfo, next interceptor.RTPWriter) interceptor.RTPWriter {
	w := &txWriter{t: t, next: next, media: txStream{ssrc: info.SSRC}}
	if info.SSRCRetransmission != 0 {
		w.rtx = &txStream{ssrc: info.SSRCRetransmission}
	}
	return w
}

// txWriter sends one local stream (and its RTX stream).
type txWriter struct {
	t     *txSender
	next  interceptor.RTPWriter // pion's
	media txStream
	rtx   *txStream
}

// txStream is the send state of one SSRC. Its writers are the track's
// forwarding loop, the prober's padding and the NACK responder, at once.
type txStream struct {
	ssrc uint32

	mu      sync.Mutex
	ctx     *srtp.Context // our encryption state; nil until the first fast packet
	hdr     rtp.Header    // EncryptRTP's scratch
	started bool          // pion encrypted the stream's first packet
	ext     uint64        // highest extended sequence number written
	pionExt uint64        // extended sequence number of pion's last packet
	inStep  bool          // ctx encrypted the stream's previous packet
}

func (w *txWriter) stream(ssrc uint32) *txStream {
	switch {
	case ssrc == w.media.ssrc:
		return &w.media
	case w.rtx != nil && ssrc == w.rtx.ssrc:
		return w.rtx
	}
	return nil
}

// txPath is the way one packet goes.
type txPath int

const (
	txViaPion  txPath = iota // no route (or no keys, or too long): pion sends it
	txViaFirst               // pion sends it; once pion has encrypted one, the stream starts there
	txViaPass                // pion sends it to keep its context in step
	txViaFast                // encrypted here; the caller writes it
	txDrop                   // from before the stream's first packet: no receiver could decrypt it
)

// txBufSize holds any packet pion would send (its receive MTU) and the
// longest SRTP trailer.
const txBufSize = handoffSize + 64

// Write sends one packet, on the fast path or through pion.
func (w *txWriter) Write(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
	st := w.stream(h.SSRC)
	if st == nil {
		w.t.tab.tx.pion.Add(1)
		return w.next.Write(h, payload, a)
	}
	var keys *sessionKeys
	r := w.t.route()
	if r != nil && h.MarshalSize()+len(payload)+int(h.PaddingSize) <= handoffSize {
		keys = w.t.keys.Load()
	}
	var buf *[]byte
	if keys != nil {
		buf = w.t.tab.getBuf()
		defer w.t.tab.putBuf(buf)
	}
	pkt, path, err := st.prepare(h, payload, buf, keys, w.t.pass)
	switch path {
	case txDrop:
		w.t.tab.tx.dropped.Add(1)
		return 0, nil
	case txViaFast:
	default:
		return w.viaPion(st, path, h, payload, a)
	}
	if err != nil {
		w.t.tab.tx.errors.Add(1)
		return 0, err
	}
	if _, err := r.conn.write(pkt, r.to); err != nil {
		w.t.tab.tx.errors.Add(1)
		return 0, err
	}
	w.t.tab.tx.fast.Add(1)
	return len(pkt), nil
}

// viaPion hands the packet to pion's writer. Before its DTLS transport is
// up pion drops what it is given (0 bytes, no error) without encrypting
// it: only a packet pion wrote starts the stream (st.start), so that the
// stream's rollover counter counts from pion's first packet, as pion's
// context and the receiver's do.
func (w *txWriter) viaPion(st *txStream, path txPath, h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
	w.t.tab.tx.pion.Add(1)
	if path == txViaPass {
		w.t.tab.tx.passed.Add(1)
	}
	n, err := w.next.Write(h, payload, a)
	if path == txViaFirst && n > 0 && err == nil {
		st.start(h.SequenceNumber)
	}
	return n, err
}

// prepare records the packet in the stream's sequence and decides its
// path; on ours (keys set: a route, and it fits buf) it marshals and
// encrypts the packet into buf.
func (st *txStream) prepare(h *rtp.Header, payload []byte, buf *[]byte, keys *sessionKeys, passEvery uint64) ([]byte, txPath, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.started {
		return nil, txViaFirst, nil
	}
	ext, ok := st.extend(h.SequenceNumber)
	switch {
	case !ok:
		return nil, txDrop, nil
	case keys == nil:
		st.inStep = false
		return nil, txViaPion, nil
	case ext >= st.pionExt+passEvery:
		st.pionExt, st.inStep = ext, false
		return nil, txViaPass, nil
	}
	pkt, err := st.seal(h, payload, *buf, keys, ext)
	if err != nil {
		st.inStep = false // its state may be half-updated: tell it the counter again
	}
	return pkt, txViaFast, err
}

// start begins the stream at seq (rollover counter 0), the first packet
// pion encrypted; later calls change nothing. Two first packets in flight
// at once could start it at the later one of the two: they would disagree
// only if the sequence number wrapped between them.
func (st *txStream) start(seq uint16) {
	st.mu.Lock()
	if !st.started {
		st.started, st.ext, st.pionExt, st.inStep = true, uint64(seq), uint64(seq), false
	}
	st.mu.Unlock()
}

// seal encrypts the packet with ext's rollover counter into buf (st.mu
// held).
func (st *txStream) seal(h *rtp.Header, payload, buf []byte, keys *sessionKeys, ext uint64) ([]byte, error) {
	if st.ctx == nil {
		ctx, err := srtp.CreateContext(keys.localKey, keys.localSalt, keys.profile)
		if err != nil {
			return nil, err
		}
		st.ctx = ctx
	}
	if !st.inStep {
		st.ctx.SetROC(st.ssrc, uint32(ext>>16)) //nolint:gosec // a 32-bit counter by definition
		st.inStep = true
	}
	n, err := rtp.MarshalPacketTo(buf, h, payload) //nolint:staticcheck // pion's own send path uses it
	if err != nil {
		return nil, err
	}
	// In place, as pion's session does.
	return st.ctx.EncryptRTP(buf, buf[:n], &st.hdr)
}

// extend returns seq's extended sequence number (with its rollovers) and
// records it (the stream started); !ok for a packet from before the
// stream's first one.
func (st *txStream) extend(seq uint16) (ext uint64, ok bool) {
	d := int64(int16(seq - uint16(st.ext))) //nolint:gosec // the wrap-around difference
	e := int64(st.ext) + d                  //nolint:gosec // far below 2^63
	if e < 0 {
		return 0, false
	}
	if e > int64(st.ext) { //nolint:gosec // as above
		st.ext = uint64(e)
	}
	return uint64(e), true
}
