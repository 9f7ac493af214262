package sfu

import (
	"errors"
	"slices"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtcp"
	"github.com/pion/srtp/v3"
)

// The RTCP fast path (issue 11), beside the receive fast path (rxfast.go).
// pion hands a received RTCP packet through five goroutines and buffers
// (the media reader's hand-off, the UDP mux, the ICE connection, the
// DTLS/SRTP demultiplexer, the SRTCP session) before an RTPSender's
// reader runs it through the interceptors (congestion control, the NACK
// responder) and our read loop (downTrack.readRTCP) sees it: each hop a
// wake-up, for about one packet in fifteen (transport-wide feedback every
// 50-100 ms per subscriber, reports, NACKs). Here the media reader, for a
// registered peer, decrypts it with the peer's SRTCP context and calls the
// interceptors' RTCP chain itself, then the tracks the packet is for.
//
// The chain: pion binds the PeerConnection's interceptors to one RTCP
// reader per RTPSender and RTPReceiver, each ending in a read of that
// stream's SRTCP buffer. None of our interceptors keeps state per reader
// that this path could disturb (the NACK responder takes its scratch space
// from a pool), nor cares which reader a packet came through: each looks
// at the SSRCs inside. So the last interceptor (rtcpCatcher) keeps the first
// chain bound, and the first (rtcpInjector) wraps pion's read so that a
// call carrying a packet in its attributes returns that packet instead of
// reading. Every interceptor passes the attributes it is called with to
// the reader below it (TestRTCPChainCarriesInjectedPacket fails if one
// did not).
//
// pion writes each packet of a compound one, marshalled again, to the
// reader of each SSRC it names, so its interceptors see a packet that
// names two of the peer's streams (a receiver report with two blocks)
// twice; here they see the compound packet once. The tracks are then told
// as pion's readers would tell them (dispatchRTCP).
//
// pion still gets, unchanged: RTCP of a peer not registered, or before its
// chain is bound; and one packet per peer every rtcpPassEvery, so its
// ICE agent counts traffic from a peer that only receives (its RTP comes
// to pion the same way: rxfast.go). Our context and pion's keep separate
// replay windows (64 packets per SSRC, pion's default); SRTCP carries its
// index, so there is no rollover state to keep in step. A packet left to
// pion takes its five hops and may be handled after newer ones the fast
// path took: at most one a second per peer, and each consumer takes
// reports out of order as it would from the network.

// rtcpInjectKey marks the attributes of a chain call with the packet the
// injector is to return.
type rtcpInjectKey struct{}

// rtcpChain holds the RTCP reader the catcher kept.
type rtcpChain struct{ r interceptor.RTCPReader }

// rtcpInjectorFactory builds the first interceptor: pion's readers are
// wrapped so a call can bring its packet.
type rtcpInjectorFactory struct{}

func (rtcpInjectorFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &rtcpInjector{}, nil
}

type rtcpInjector struct{ interceptor.NoOp }

func (*rtcpInjector) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	return interceptor.RTCPReaderFunc(func(b []byte, a interceptor.Attributes) (int, interceptor.Attributes, error) {
		if a != nil {
			if in, ok := a[rtcpInjectKey{}].(*[]byte); ok {
				if len(*in) > len(b) {
					return 0, nil, errRTCPTooLong
				}
				return copy(b, *in), a, nil
			}
		}
		return reader.Read(b, a)
	})
}

var errRTCPTooLong = errors.New("sfu: RTCP packet larger than the read buffer")

// rtcpCatcherFactory builds the last interceptor, which hands the first
// chain it is bound to the PeerConnection's hooks.
type rtcpCatcherFactory struct{ hooks *peerHooks }

func (f rtcpCatcherFactory) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &rtcpCatcher{hooks: f.hooks}, nil
}

type rtcpCatcher struct {
	interceptor.NoOp
	hooks *peerHooks
}

func (c *rtcpCatcher) BindRTCPReader(reader interceptor.RTCPReader) interceptor.RTCPReader {
	if c.hooks != nil {
		c.hooks.rtcp.CompareAndSwap(nil, &rtcpChain{r: reader})
	}
	return reader
}

// rtcpTargets are the tracks of one peer that RTCP from it may be about.
type rtcpTargets struct {
	chain func() *rtcpChain // nil until pion bound a reader
	down  []*downTrack      // what the peer is sent, by their bound SSRC
}

// isRTCP tells RTCP (packet types 192-223 in the second byte) from RTP,
// STUN and DTLS, as pion's mux does (RFC 5761, RFC 7983); 8 bytes is the
// shortest RTCP header.
func isRTCP(b []byte) bool {
	return len(b) >= 8 && b[0]&0xc0 == 0x80 && b[1] >= 192 && b[1] <= 223
}

// receiveRTCP takes b, an SRTCP packet from p's address, unless pion is
// to have it (false). b is decrypted in place.
func (p *fastPeer) receiveRTCP(b []byte) bool {
	t := p.rtcp
	if t == nil {
		return false
	}
	chain := t.chain()
	if chain == nil {
		return false
	}
	now := time.Now()
	at := int64(now.Sub(p.epoch))
	if last := p.rtcpPass.Load(); at-last >= int64(p.tab.rtcpPassEvery) && p.rtcpPass.CompareAndSwap(last, at) {
		p.tab.stats.rtcpPassed.Add(1)
		return false
	}
	p.mu.Lock()
	pkt, err := p.ctx.DecryptRTCP(b, b, &p.rtcpHdr)
	p.mu.Unlock()
	if err != nil {
		if errors.Is(err, srtp.ErrFailedToVerifyAuthTag) {
			p.tab.stats.rtcpFailures.Add(1)
		} else {
			p.tab.stats.rtcpDropped.Add(1) // a replay, or too short
		}
		return true
	}
	n, attrs, err := chain.r.Read(pkt, interceptor.Attributes{rtcpInjectKey{}: &pkt})
	if err != nil {
		p.tab.stats.rtcpDropped.Add(1) // it does not parse: pion would drop it too
		return true
	}
	pkts, err := attrs.GetRTCPPackets(pkt[:n])
	if err != nil {
		p.tab.stats.rtcpDropped.Add(1)
		return true
	}
	p.tab.stats.rtcp.Add(1)
	p.dispatchRTCP(pkt[:n], pkts, now)
	return true
}

// dispatchRTCP tells the tracks pkts name about them, as pion's readers
// would: a down track gets the packets that name its SSRC (pion writes
// each packet of a compound one to the streams it names), an up track
// the raw compound packet, whose sender reports it picks by SSRC itself;
// each track once.
func (p *fastPeer) dispatchRTCP(raw []byte, pkts []rtcp.Packet, now time.Time) {
	var told [4]*upTrack // a compound packet names a few SSRCs of a peer at most
	seen := told[:0]
	for _, d := range p.rtcp.down {
		if mine := packetsFor(pkts, d.boundSSRC()); len(mine) > 0 {
			d.onRTCP(mine, now)
		}
	}
	for _, pk := range pkts {
		for _, ssrc := range pk.DestinationSSRC() {
			if st := p.stream(ssrc); st != nil && !st.rtx && !slices.Contains(seen, st.up) {
				seen = append(seen, st.up)
				st.up.onRTCP(raw, ssrc, now)
			}
		}
	}
}

// packetsFor returns the packets of pkts that name ssrc (none for 0, an
// unbound track's): pkts itself when all of them do.
func packetsFor(pkts []rtcp.Packet, ssrc uint32) []rtcp.Packet {
	if ssrc == 0 {
		return nil
	}
	var out []rtcp.Packet
	for i, pk := range pkts {
		if slices.Contains(pk.DestinationSSRC(), ssrc) {
			if out != nil {
				out = append(out, pk)
			}
			continue
		}
		if out == nil {
			out = append(make([]rtcp.Packet, 0, len(pkts)), pkts[:i]...)
		}
	}
	if out == nil {
		return pkts
	}
	return out
}
