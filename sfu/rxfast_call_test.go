package sfu

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
)

// The receive fast path (rxfast.go) in calls between real pion clients.

// passiveDTLS makes a pion client answer the SFU's offers "passive", as
// pion does by default with an ICE-lite offerer (rtctest answers "active",
// as browsers do): the SFU is then its DTLS client and has no keys.
func passiveDTLS() rtctest.Options {
	return rtctest.Options{Configure: func(se *webrtc.SettingEngine) { _ = se.SetAnsweringDTLSRole(webrtc.DTLSRoleServer) }}
}

// fastShare is the fast path's share of the RTP packets received between
// two snapshots.
func fastShare(before, after ReceivePathStats) (fast, all uint64) {
	fast = after.Fast - before.Fast
	return fast, fast + after.Fallback - before.Fallback
}

// checkFastShare fails the test if less than 95 % of the RTP packets the
// SFU received between before and after took the fast path. After setup
// every packet should (100 % measured); pion delivers only what it had
// buffered at the takeover.
func checkFastShare(t *testing.T, before, after ReceivePathStats) {
	t.Helper()
	fast, all := fastShare(before, after)
	t.Logf("receive path: %d of %d RTP packets fast; since the start %+v", fast, all, after)
	if all == 0 || float64(fast) < 0.95*float64(all) {
		t.Errorf("%d of %d RTP packets took the fast path, want >= 95 %%", fast, all)
	}
	if after.AuthFailures != 0 {
		t.Errorf("%d authentication failures", after.AuthFailures)
	}
}

// checkSendShare fails the test if less than 95 % of the RTP packets the
// SFU sent between before and after took the send fast path, or if any
// failed.
func checkSendShare(t *testing.T, before, after SendPathStats) {
	t.Helper()
	fast, all := after.Fast-before.Fast, after.Fast+after.Pion-before.Fast-before.Pion
	t.Logf("send path: %d of %d RTP packets fast; since the start %+v", fast, all, after)
	if all == 0 || float64(fast) < 0.95*float64(all) {
		t.Errorf("%d of %d RTP packets took the send fast path, want >= 95 %%", fast, all)
	}
	if after.Errors != 0 {
		t.Errorf("%d send errors", after.Errors)
	}
}

// checkClean fails the test if a client's media arrived damaged or lost.
func checkClean(t *testing.T, c *testClient) {
	t.Helper()
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
		r := c.Received(kind)
		if r.Packets == 0 || r.Corrupt != 0 || r.Lost() != 0 {
			t.Errorf("%s's %s: %d packets, %d corrupt, %d lost", c.part.name, kind, r.Packets, r.Corrupt, r.Lost())
		}
	}
	select {
	case err := <-c.errs:
		t.Errorf("%s: %v", c.part.name, err)
	default:
	}
}

// fastCall is a call of two clients sending to each other until the test
// ends; both have received some video.
func fastCall(t *testing.T, s *SFU, ob rtctest.Options) (a, b *testClient) {
	t.Helper()
	call := s.NewCall(t.Name())
	t.Cleanup(call.Close)
	a = joinWith(t, call, "alice", true, rtctest.Options{})
	b = joinWith(t, call, "bob", false, ob)
	t.Cleanup(a.StartSending())
	t.Cleanup(b.StartSending())
	video := webrtc.RTPCodecTypeVideo
	waitMore(t, "bob", b, video, 0, 20, 10*time.Second)
	waitMore(t, "alice", a, video, 0, 20, 10*time.Second)
	return a, b
}

// moreVideo waits until both clients received n more video packets.
func moreVideo(t *testing.T, n int, cs ...*testClient) {
	t.Helper()
	for _, c := range cs {
		v := webrtc.RTPCodecTypeVideo
		waitMore(t, c.part.name, c, v, c.Received(v).Packets, n, 10*time.Second)
	}
}

// After setup all media takes the fast path and arrives intact, with
// plain and batched socket reads.
func TestFastPathCarriesCall(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched-reads=%v", batched), func(t *testing.T) {
			s := newTestSFUWith(t, Config{BatchedReads: batched})
			a, b := fastCall(t, s, rtctest.Options{})
			for _, c := range []*testClient{a, b} {
				if tw := c.part.twccFeedback(); tw == nil || tw.extID.Load() == 0 {
					t.Fatalf("%s: no transport-cc recorder for the fast path", c.part.name)
				}
			}
			before, sent := s.ReceivePath(), s.SendPath()
			moreVideo(t, 100, a, b)
			checkFastShare(t, before, s.ReceivePath())
			checkSendShare(t, sent, s.SendPath())
			checkClean(t, a)
			checkClean(t, b)
		})
	}
}

// A participant without keys (the SFU ended up DTLS client) stays on
// pion's path; the other one is on the fast path; media is intact.
func TestFastPathWithoutKeysStaysOnPion(t *testing.T) {
	s := newTestSFU(t)
	a, b := fastCall(t, s, passiveDTLS())
	if b.part.sessionKeys() != nil {
		t.Fatal("bob has keys: the SFU was the DTLS server after all")
	}
	if _, ok := b.part.fast.registered(); ok {
		t.Fatal("bob registered without keys")
	}
	if _, ok := a.part.fast.registered(); !ok {
		t.Fatal("alice not registered")
	}
	before := s.ReceivePath()
	moreVideo(t, 100, a, b)
	after := s.ReceivePath()
	fast, all := fastShare(before, after)
	t.Logf("%d of %d RTP packets fast", fast, all)
	// Both send 50 audio and 50 video packets a second: half and half.
	if share := float64(fast) / float64(all); share < 0.4 || share > 0.6 {
		t.Errorf("fast share %.2f, want about half (alice's)", share)
	}
	checkClean(t, a)
	checkClean(t, b)
}

// With the fast path off (Config.PionReceive) the call works and nothing
// is counted.
func TestPionReceiveStillWorks(t *testing.T) {
	s := newTestSFUWith(t, Config{PionReceive: true})
	a, b := fastCall(t, s, rtctest.Options{})
	moreVideo(t, 50, a, b)
	checkClean(t, a)
	checkClean(t, b)
	if st := s.ReceivePath(); st != (ReceivePathStats{}) {
		t.Fatalf("counters %+v with the fast path off", st)
	}
}

// A packet from alice's address with one of her SSRCs but a wrong
// authentication tag (sent from a raw socket with her address and port as
// source) is dropped and counted; the call goes on.
func TestFastPathDropsForgedPacket(t *testing.T) {
	s := newTestSFU(t)
	a, b := fastCall(t, s, rtctest.Options{})
	pair, err := a.part.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		t.Fatalf("no selected pair: %v", err)
	}
	from, _ := pairRemote(pair)
	to := netip.AddrPortFrom(netip.MustParseAddr(pair.Local.Address), pair.Local.Port)
	if reg, ok := a.part.fast.registered(); !ok || reg != canonical(from) {
		t.Fatalf("alice registered under %v (%v), her pair's address is %v", reg, ok, from)
	}
	var ssrc uint32
	for _, st := range *a.part.fast.streams.Load() {
		if !st.rtx {
			ssrc = st.ssrc
		}
	}
	forged := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: ptVP8, SequenceNumber: 60000, SSRC: ssrc},
		Payload: make([]byte, 200)}
	raw, _ := forged.Marshal()
	raw = append(raw, make([]byte, 16)...) // a (wrong) authentication tag
	before := s.ReceivePath()
	const forgeries = 3
	for range forgeries {
		sendSpoofed(t, from, to, raw)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.ReceivePath().AuthFailures-before.AuthFailures < forgeries {
		if time.Now().After(deadline) {
			t.Fatalf("authentication failures: %+v, want %d more than %+v", s.ReceivePath(), forgeries, before)
		}
		time.Sleep(10 * time.Millisecond)
	}
	before = s.ReceivePath()
	moreVideo(t, 50, a, b)
	after := s.ReceivePath()
	if after.AuthFailures != forgeries {
		t.Errorf("%d authentication failures, want %d", after.AuthFailures, forgeries)
	}
	after.AuthFailures = 0
	checkFastShare(t, before, after)
	checkClean(t, a)
	checkClean(t, b)
}

// sendSpoofed sends payload in a UDP datagram from "from" (an address of
// this host, a port another socket has) to "to" through a raw socket;
// the test is skipped where raw sockets are not allowed (not root).
func sendSpoofed(t *testing.T, from, to netip.AddrPort, payload []byte) {
	t.Helper()
	network := "ip4:udp"
	if from.Addr().Is6() && !from.Addr().Is4In6() {
		network = "ip6:udp"
	}
	c, err := net.ListenPacket(network, from.Addr().Unmap().String())
	if err != nil {
		t.Skipf("no raw socket: %v", err)
	}
	defer c.Close()
	udp := make([]byte, 8, 8+len(payload))
	binary.BigEndian.PutUint16(udp[0:], from.Port())
	binary.BigEndian.PutUint16(udp[2:], to.Port())
	binary.BigEndian.PutUint16(udp[4:], uint16(8+len(payload))) //nolint:gosec // a small datagram
	udp = append(udp, payload...)
	binary.BigEndian.PutUint16(udp[6:], udpChecksum(from.Addr().Unmap(), to.Addr().Unmap(), udp))
	if _, err := c.WriteTo(udp, &net.IPAddr{IP: to.Addr().Unmap().AsSlice(), Zone: to.Addr().Zone()}); err != nil {
		t.Fatal(err)
	}
}

// udpChecksum is RFC 768's checksum (with RFC 8200's pseudo-header for
// IPv6, where it is mandatory).
func udpChecksum(src, dst netip.Addr, udp []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src.AsSlice())
	add(dst.AsSlice())
	sum += 17 + uint32(len(udp)) //nolint:gosec // a small datagram
	add(udp)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	if c := ^uint16(sum); c != 0 {
		return c
	}
	return 0xffff
}

// Under 5 % loss on every hop (loss_test.go's network, pion vnet: the
// fast path reads vnet sockets too) the publisher's media and its RTX
// repairs take the fast path, and the subscriber's video is as complete
// and intact as TestLossRepairFivePercent requires.
func TestFastPathRepairsUnderLoss(t *testing.T) {
	n := newLossyNet(t, 5)
	c := newLossCall(t, n)
	stop := c.pub.StartMedia(lossVideo)
	defer stop()
	// Set-up: the first packets go through pion, until the keys and the
	// stream are registered.
	for deadline := time.Now().Add(10 * time.Second); c.sfu.ReceivePath().Fast == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no packet on the fast path: %+v", c.sfu.ReceivePath())
		}
	}
	before := c.sfu.ReceivePath()
	time.Sleep(6 * time.Second)
	cutoff := time.Now()
	time.Sleep(lossSettle)
	after := c.sfu.ReceivePath()
	r := c.seqs.Report(cutoff, time.Now())
	c.checkSignalling(t)
	c.logStats(t, n, r)
	checkFastShare(t, before, after)
	up, _ := c.videoStats(t)
	if up.Recovered == 0 || after.Repairs == 0 {
		t.Errorf("%d packets recovered over RTX, %d of them on the fast path", up.Recovered, after.Repairs)
	}
	checkIntact(t, r)
	if res := r.Residual(); res > lossMaxResidual {
		t.Errorf("residual video loss %.3f %% (%d of %d), want <= %.1f %%",
			100*res, r.Unrepaired, r.Expected, 100*lossMaxResidual)
	}
}

// An ICE restart mid-call moves alice to a new candidate pair (pion
// gathers new sockets): she is unregistered, then registered under her
// new address, and media continues on the fast path.
func TestFastPathAcrossICERestart(t *testing.T) {
	s := newTestSFU(t)
	a, b := fastCall(t, s, rtctest.Options{})
	for round := range 2 {
		old, _ := a.part.fast.registered()
		oldUfrag := iceUfrag(a.PC.RemoteDescription())
		if err := a.restartICE(); err != nil {
			t.Fatalf("round %d: restart: %v", round, err)
		}
		newUfrag := iceUfrag(a.part.pc.LocalDescription())
		deadline := time.Now().Add(10 * time.Second)
		for iceUfrag(a.PC.RemoteDescription()) != newUfrag || newUfrag == oldUfrag {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the client never applied the answer", round)
			}
			time.Sleep(5 * time.Millisecond)
		}
		waitConnected(t, "alice", a, 10*time.Second)
		moreVideo(t, 50, a, b) // media continues
		now, ok := a.part.fast.registered()
		pair, _ := a.part.pc.SCTP().Transport().ICETransport().GetSelectedCandidatePair()
		want, _ := pairRemote(pair)
		if !ok || now != canonical(want) {
			t.Fatalf("round %d: alice registered under %v (%v), her pair's address is %v", round, now, ok, want)
		}
		t.Logf("round %d: alice's address %v -> %v", round, old, now)
		before, sent := s.ReceivePath(), s.SendPath()
		moreVideo(t, 100, a, b)
		checkFastShare(t, before, s.ReceivePath())
		checkSendShare(t, sent, s.SendPath())
	}
	for _, c := range []*testClient{a, b} {
		for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
			if r := c.Received(kind); r.Corrupt != 0 {
				t.Errorf("%s's %s: %d corrupt", c.part.name, kind, r.Corrupt)
			}
		}
	}
}

// A publisher who receives nothing sends the SFU little besides its RTP
// (a sender report a second, a STUN keepalive every 2 s), and the fast
// path hides that RTP from pion's ICE agent: with a 500 ms disconnected
// timeout only the copies handed to pion (every 125 ms) keep the agent
// from calling the pair disconnected. The control, without copies, shows
// that the publisher's signaler would hear Interrupted.
func TestFastPathKeepsICEAlive(t *testing.T) {
	for _, copies := range []bool{true, false} {
		t.Run(fmt.Sprintf("copies=%v", copies), func(t *testing.T) {
			s := newTestSFUWith(t, Config{ICEDisconnectedTimeout: 500 * time.Millisecond, ICEFailedTimeout: 10 * time.Second})
			if !copies {
				s.fast.passEvery, s.fast.passPackets = time.Hour, 1<<31
			}
			call := s.NewCall(t.Name())
			t.Cleanup(call.Close)
			a := joinWatched(t, call, "alice", true, rtctest.Options{})
			b := joinWatched(t, call, "bob", false, rtctest.Options{})
			t.Cleanup(a.StartSending()) // bob sends nothing: alice receives nothing
			waitMore(t, "bob", b.testClient, webrtc.RTPCodecTypeVideo, 0, 20, 10*time.Second)
			// 8 s is 16 disconnected timeouts; the control flaps within 1-3 s.
			window := time.NewTimer(8 * time.Second)
			defer window.Stop()
			for a.ev.String() == "" {
				select {
				case <-a.ev.changed:
					continue
				case <-window.C:
				}
				break
			}
			rx := s.ReceivePath()
			t.Logf("copies %v: alice's signaler saw %q; %+v", copies, a.ev.String(), rx)
			if copies && (a.ev.String() != "" || rx.Passed == 0) {
				t.Errorf("alice's signaler saw %q with %d copies to pion, want nothing", a.ev.String(), rx.Passed)
			}
			if !copies && a.ev.String() == "" {
				t.Error("without copies alice was never interrupted: the test does not test")
			}
		})
	}
}
