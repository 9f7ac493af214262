package sfu

import (
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/srtp/v3"
	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
)

// tapNet is the real network with a copy of every RTP packet its UDP
// sockets read kept for the test (pion's UDP mux and ICE candidates read
// with ReadFrom). Packets beyond the buffer are not kept.
type tapNet struct {
	transport.Net
	rtp chan []byte

	mu    sync.Mutex
	conns []transport.UDPConn // to write through, as the SFU would
}

func newTapNet(t *testing.T) *tapNet {
	t.Helper()
	n, err := stdnet.NewNet()
	if err != nil {
		t.Fatal(err)
	}
	return &tapNet{Net: n, rtp: make(chan []byte, 4096)}
}

func (n *tapNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.conns = append(n.conns, c)
	n.mu.Unlock()
	return &tapConn{UDPConn: c, n: n}, nil
}

// conn returns the socket bound to addr:port.
func (n *tapNet) conn(addr string, port int) transport.UDPConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.conns {
		if a, ok := c.LocalAddr().(*net.UDPAddr); ok && a.Port == port && a.IP.Equal(net.ParseIP(addr)) {
			return c
		}
	}
	return nil
}

type tapConn struct {
	transport.UDPConn
	n *tapNet
}

func (c *tapConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.UDPConn.ReadFrom(b)
	if err == nil && isSRTP(b[:n]) {
		select {
		case c.n.rtp <- append([]byte(nil), b[:n]...):
		default:
		}
	}
	return n, a, err
}

// isSRTP: RTP version 2, not RTCP (RFC 5761 4: types 192-223), not STUN
// or DTLS (first byte 128-191, RFC 7983).
func isSRTP(b []byte) bool {
	return len(b) >= 12 && b[0] >= 128 && b[0] <= 191 && (b[1] < 192 || b[1] > 223)
}

// takeSRTP returns the packets the tap has kept so far.
func (n *tapNet) takeSRTP() [][]byte {
	var out [][]byte
	for {
		select {
		case b := <-n.rtp:
			out = append(out, b)
		default:
			return out
		}
	}
}

// decryptAll decrypts pkts (those of ssrcs, or all if ssrcs is nil) with
// the given master key and salt; it counts the packets decrypted and those
// whose payload is what an rtctest peer sends.
func decryptAll(t *testing.T, pkts [][]byte, key, salt []byte, p srtp.ProtectionProfile, ssrcs map[uint32]bool) (decrypted, valid int) {
	t.Helper()
	ctx, err := srtp.CreateContext(key, salt, p, srtp.SRTPNoReplayProtection())
	if err != nil {
		t.Fatal(err)
	}
	return decryptWith(t, ctx, pkts, ssrcs)
}

// decryptWith is decryptAll with a context of the caller's (which then
// knows the streams' rollover counters).
func decryptWith(t *testing.T, ctx *srtp.Context, pkts [][]byte, ssrcs map[uint32]bool) (decrypted, valid int) {
	t.Helper()
	for _, b := range pkts {
		if ssrcs != nil && !ssrcs[binary.BigEndian.Uint32(b[8:12])] {
			continue
		}
		plain, err := ctx.DecryptRTP(nil, b, nil)
		if err != nil {
			t.Errorf("decrypt ssrc %d seq %d: %v", binary.BigEndian.Uint32(b[8:12]), binary.BigEndian.Uint16(b[2:4]), err)
			continue
		}
		decrypted++
		var pkt rtp.Packet
		if pkt.Unmarshal(plain) != nil || len(pkt.Payload) < 4 {
			continue
		}
		for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
			if string(pkt.Payload) == string(rtctest.Payload(kind, binary.BigEndian.Uint32(pkt.Payload))) {
				valid++
				break
			}
		}
	}
	return decrypted, valid
}

// senderSSRCs are the SSRCs of a client's outgoing tracks.
func senderSSRCs(pc *webrtc.PeerConnection) map[uint32]bool {
	out := map[uint32]bool{}
	for _, s := range pc.GetSenders() {
		for _, e := range s.GetParameters().Encodings {
			out[uint32(e.SSRC)] = true
		}
	}
	return out
}

// TestSessionKeysDecryptRealCall: in a real call between pion clients and
// the SFU, a publisher's participant keys (remote key and salt) decrypt
// the SRTP packets it sends as they arrive at the SFU's media socket, into
// exactly the payloads it sent; a subscriber's participant keys (local key
// and salt) decrypt the SRTP packets the SFU sends as they arrive at the
// subscriber's socket, and a packet they encrypt, sent from the SFU's
// socket, is accepted by the subscriber's pion. Both ways of negotiating: the publisher offers (the SFU answers
// "a=setup:passive") or the SFU offers (the client answers "active"); the
// SFU is the DTLS server either way.
func TestSessionKeysDecryptRealCall(t *testing.T) {
	for _, pubCalls := range []bool{true, false} {
		t.Run(fmt.Sprintf("publisher-offers=%v", pubCalls), func(t *testing.T) {
			sfuNet, subNet := newTapNet(t), newTapNet(t)
			s := newTestSFUWith(t, Config{Net: sfuNet})
			call := s.NewCall("keys")
			t.Cleanup(call.Close)
			pub := joinWith(t, call, "pub", pubCalls, rtctest.Options{})
			sub := joinWith(t, call, "sub", !pubCalls, rtctest.Options{Configure: func(se *webrtc.SettingEngine) { se.SetNet(subNet) }})
			stop := pub.StartSending()
			t.Cleanup(stop)
			if err := sub.WaitPackets(webrtc.RTPCodecTypeVideo, 20, 10*time.Second); err != nil {
				t.Fatal(err)
			}

			for _, c := range []*testClient{pub, sub} {
				checkServerRole(t, c)
			}
			pk, sk := pub.part.sessionKeys(), sub.part.sessionKeys()
			if pk == nil || sk == nil {
				t.Fatalf("keys: publisher %v, subscriber %v", pk, sk)
			}
			if pub.part.twccFeedback() == nil || sub.part.twccFeedback() == nil {
				t.Error("no TWCC feedback handle")
			}

			dec, valid := decryptAll(t, sfuNet.takeSRTP(), pk.remoteKey, pk.remoteSalt, pk.profile, senderSSRCs(pub.PC))
			t.Logf("at the SFU: %d of the publisher's packets decrypted, %d payloads as sent", dec, valid)
			if dec < 20 || valid != dec {
				t.Errorf("publisher's packets at the SFU: %d decrypted, %d as sent; want >= 20, all", dec, valid)
			}
			subCtx, err := srtp.CreateContext(sk.localKey, sk.localSalt, sk.profile, srtp.SRTPNoReplayProtection())
			if err != nil {
				t.Fatal(err)
			}
			dec, valid = decryptWith(t, subCtx, subNet.takeSRTP(), nil)
			t.Logf("at the subscriber: %d packets decrypted, %d payloads as the publisher sent", dec, valid)
			if dec < 20 || valid < 20 {
				t.Errorf("SFU's packets at the subscriber: %d decrypted, %d as sent; want >= 20 each", dec, valid)
			}
			stop()
			injectAccepted(t, sfuNet, subNet, subCtx, sub)
		})
	}
}

// checkServerRole checks from the descriptions that the SFU is the DTLS
// server of c's PeerConnection: it answered "passive", or it offered
// "actpass" and the client answered "active".
func checkServerRole(t *testing.T, c *testClient) {
	t.Helper()
	local := c.part.pc.CurrentLocalDescription()
	remote := c.part.pc.CurrentRemoteDescription()
	if local == nil || remote == nil {
		t.Fatalf("%s: no negotiated descriptions", c.part.name)
	}
	ls, rs := sdpAttr(local.SDP, "setup"), sdpAttr(remote.SDP, "setup")
	switch {
	case local.Type == webrtc.SDPTypeAnswer && ls == "passive":
	case local.Type == webrtc.SDPTypeOffer && ls == "actpass" && rs == "active":
	default:
		t.Errorf("%s: SFU's %s has setup %q, client's %s %q: the SFU is not the DTLS server",
			c.part.name, local.Type, ls, remote.Type, rs)
	}
}

// TestSessionKeysNoneWhenSFUIsDTLSClient: a client that answers the SFU's
// offer "passive" makes the SFU the DTLS client: that participant has no
// keys (never wrong ones), and the call works as before.
func TestSessionKeysNoneWhenSFUIsDTLSClient(t *testing.T) {
	s := newTestSFU(t)
	call := s.NewCall("keys")
	t.Cleanup(call.Close)
	passive := rtctest.Options{Configure: func(se *webrtc.SettingEngine) { _ = se.SetAnsweringDTLSRole(webrtc.DTLSRoleServer) }}
	pub := joinWith(t, call, "pub", false, passive)
	sub := joinWith(t, call, "sub", true, rtctest.Options{})
	t.Cleanup(pub.StartSending())
	if err := sub.WaitPackets(webrtc.RTPCodecTypeVideo, 20, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if rs := sdpAttr(pub.part.pc.CurrentRemoteDescription().SDP, "setup"); rs != "passive" {
		t.Fatalf("client answered setup %q, want passive", rs)
	}
	if k := pub.part.sessionKeys(); k != nil {
		t.Errorf("keys as DTLS client: %+v", k)
	}
	if sub.part.sessionKeys() == nil {
		t.Error("no keys for the client that offered")
	}
}

// injectAccepted sends the subscriber one RTP packet encrypted with the
// SFU's local keys (ctx) from the SFU's media socket, next in sequence on
// its video stream once that has gone quiet, and checks that the
// subscriber's pion accepts it: one more video packet, payload intact.
func injectAccepted(t *testing.T, sfuNet, subNet *tapNet, ctx *srtp.Context, sub *testClient) {
	t.Helper()
	var ssrc uint32
	for _, r := range sub.PC.GetReceivers() {
		if tr := r.Track(); tr != nil && tr.Kind() == webrtc.RTPCodecTypeVideo {
			ssrc = uint32(tr.SSRC())
		}
	}
	pair, err := sub.part.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || ssrc == 0 {
		t.Fatalf("no selected pair (%v) or video ssrc %d", err, ssrc)
	}
	conn := sfuNet.conn(pair.Local.Address, int(pair.Local.Port))
	if conn == nil {
		t.Fatalf("no SFU socket at %s:%d", pair.Local.Address, pair.Local.Port)
	}
	// Quiet: no video packet for 500 ms after the publisher stopped (the
	// last ones in flight arrive within milliseconds on loopback).
	before := sub.Received(webrtc.RTPCodecTypeVideo)
	for quiet := time.Now(); time.Since(quiet) < 500*time.Millisecond; time.Sleep(20 * time.Millisecond) {
		if now := sub.Received(webrtc.RTPCodecTypeVideo); now.Packets != before.Packets {
			before, quiet = now, time.Now()
		}
	}
	// The context has followed the stream (rollover counter) on the
	// packets the subscriber's socket read.
	decryptWith(t, ctx, subNet.takeSRTP(), map[uint32]bool{ssrc: true})
	pkt := rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, PayloadType: ptVP8, SSRC: ssrc,
		SequenceNumber: before.LastSeq + 1, Timestamp: 123456}, Payload: rtctest.Payload(webrtc.RTPCodecTypeVideo, 777)}
	plain, err := pkt.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	enc, err := ctx.EncryptRTP(nil, plain, nil)
	if err != nil {
		t.Fatal(err)
	}
	raddr := &net.UDPAddr{IP: net.ParseIP(pair.Remote.Address), Port: int(pair.Remote.Port)}
	if _, err := conn.WriteTo(enc, raddr); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := sub.Received(webrtc.RTPCodecTypeVideo)
		if r.Packets == before.Packets+1 && r.Corrupt == before.Corrupt && r.LastSeq == pkt.SequenceNumber {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the packet encrypted with the local keys was not accepted: before %+v, now %+v", before, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
