package sfu

import (
	"errors"
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
// that this path could disturb (the NACK responder's scratch space is
// locked), nor cares which reader a packet came through: each looks at
// the SSRCs inside. So the last interceptor (rtcpCatcher) keeps the first
// chain bound, and the first (rtcpInjector) wraps pion's read so that a
// call carrying a packet in its attributes returns that packet instead of
// reading. Every interceptor passes the attributes it is called with to
// the reader below it (checked for each in rtcpfast_test.go).
//
// pion, given a compound packet, hands it to the reader of each SSRC it
// is addressed to, so its interceptors see it once per SSRC; here they see
// it once (a NACK is answered once, not once per addressed stream). The
// tracks are then told as pion's readers would tell them: each track an
// SSRC of the packet names, once.
//
// pion still gets, unchanged: RTCP of a peer not registered, or before its
// chain is bound; and one packet per peer at least every passEvery, so its
// ICE agent counts traffic from a peer that only receives (its RTP comes
// to pion the same way: rxfast.go). Our context and pion's keep separate
// replay windows; SRTCP carries its index, so there is no rollover state
// to keep in step.

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
			p.tab.stats.dropped.Add(1)
		}
		return true
	}
	p.tab.stats.rtcp.Add(1)
	n, attrs, err := chain.r.Read(pkt, interceptor.Attributes{rtcpInjectKey{}: &pkt})
	if err != nil {
		return true // it does not parse: pion's readers would drop it too
	}
	pkts, err := attrs.GetRTCPPackets(pkt[:n])
	if err != nil {
		return true
	}
	p.dispatchRTCP(pkt[:n], pkts, now)
	return true
}

// dispatchRTCP tells each track an SSRC of pkts names about them, once.
func (p *fastPeer) dispatchRTCP(raw []byte, pkts []rtcp.Packet, now time.Time) {
	var told [4]any // a compound packet names a few SSRCs of a peer at most
	seen := told[:0]
	for _, pk := range pkts {
		for _, ssrc := range pk.DestinationSSRC() {
			if d := p.rtcp.downFor(ssrc); d != nil && !toldAlready(seen, d) {
				seen = append(seen, d)
				d.onRTCP(pkts, now)
			} else if st := p.stream(ssrc); st != nil && !st.rtx && !toldAlready(seen, st.up) {
				seen = append(seen, st.up)
				st.up.onRTCP(raw, ssrc, now)
			}
		}
	}
}

func toldAlready(s []any, v any) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// downFor is the track sent with ssrc, or nil.
func (t *rtcpTargets) downFor(ssrc uint32) *downTrack {
	if ssrc == 0 {
		return nil // an unbound track's
	}
	for _, d := range t.down {
		if d.boundSSRC() == ssrc {
			return d
		}
	}
	return nil
}
