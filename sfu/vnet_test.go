package sfu

import (
	"math/rand"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/transport/v4/vnet"
	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
)

// Addresses of the simulated network used by TestSymmetricNATWithLossReachesSFU.
const (
	vnetWANCIDR   = "1.2.3.0/24"
	vnetSFUIP     = "1.2.3.4"   // the SFU's public address
	vnetCalleeIP  = "1.2.3.5"   // a client directly on the WAN
	vnetNATIP     = "1.2.3.100" // the LAN router's public (mapped) address
	vnetLANCIDR   = "192.168.1.0/24"
	vnetCallerIP  = "192.168.1.2" // a client behind the NAT
	vnetLossPct   = 5             // random loss each way on the caller's path
	vnetMinPkts   = 150           // per kind and side: 3 s of media at 50 pps
	vnetWaitMedia = 15 * time.Second
)

// vnetTopology is a WAN with the SFU and one client on it, and a LAN behind
// a symmetric NAT holding another client whose path drops packets.
type vnetTopology struct {
	wan, lan    *vnet.Router
	sfuNet      *vnet.Net
	calleeNet   *vnet.Net // on the WAN, no NAT, no loss
	callerNet   *vnet.Net // behind the symmetric NAT, lossy both ways
	uplinkDrops atomic.Int64
}

// mustFunc returns a check that fails t on a non-nil error.
func mustFunc(t *testing.T) func(error) {
	return func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// vnetWAN builds a virtual WAN with the SFU's network on it, and the
// logger factory its routers need (nil panics).
func vnetWAN(t *testing.T, cidr, sfuIP string) (*vnet.Router, *vnet.Net, logging.LoggerFactory) {
	t.Helper()
	must := mustFunc(t)
	lf := logging.NewDefaultLoggerFactory()
	wan, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: cidr, LoggerFactory: lf})
	must(err)
	sfuNet, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{sfuIP}})
	must(err)
	must(wan.AddNet(sfuNet))
	return wan, sfuNet, lf
}

func newVNetTopology(t *testing.T) *vnetTopology {
	t.Helper()
	must := mustFunc(t)
	v := &vnetTopology{}
	var err error
	var lf logging.LoggerFactory
	v.wan, v.sfuNet, lf = vnetWAN(t, vnetWANCIDR, vnetSFUIP)
	v.calleeNet, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vnetCalleeIP}})
	must(err)
	must(v.wan.AddNet(v.calleeNet))

	// Symmetric NAT (RFC 4787 address-and-port-dependent mapping and
	// filtering): the mapped port differs per destination and only the
	// exact destination may answer, so only a peer-reflexive pair learned
	// by the SFU from the client's own checks can work.
	v.lan, err = vnet.NewRouter(&vnet.RouterConfig{
		CIDR:      vnetLANCIDR,
		StaticIPs: []string{vnetNATIP},
		NATType: &vnet.NATType{
			Mode:              vnet.NATModeNormal,
			MappingBehavior:   vnet.EndpointAddrPortDependent,
			FilteringBehavior: vnet.EndpointAddrPortDependent,
		},
		LoggerFactory: lf,
	})
	must(err)
	must(v.wan.AddRouter(v.lan))

	v.callerNet, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vnetCallerIP}})
	must(err)
	// Downlink loss: every chunk delivered to the caller's NIC.
	lossy, err := vnet.NewLossFilter(v.callerNet, vnetLossPct)
	must(err)
	must(v.lan.AddNet(lossy))
	// Uplink loss: chunks leaving the LAN. A router's filters run on its
	// one routing goroutine under its lock, so rng needs no lock of its own.
	_, lanNet, err := net.ParseCIDR(vnetLANCIDR)
	must(err)
	rng := rand.New(rand.NewSource(time.Now().UnixNano())) //nolint:gosec
	v.lan.AddChunkFilter(func(c vnet.Chunk) bool {
		src, ok := c.SourceAddr().(*net.UDPAddr)
		if !ok || !lanNet.Contains(src.IP) {
			return true
		}
		if rng.Intn(100) < vnetLossPct {
			v.uplinkDrops.Add(1)
			return false
		}
		return true
	})

	must(v.wan.Start()) // starts the child router too
	// Registered first, so it runs after every peer and the SFU are closed.
	// Stop also stops the LAN router; their goroutines exit asynchronously,
	// which goleak's retries in TestMain tolerate.
	t.Cleanup(func() {
		if err := v.wan.Stop(); err != nil {
			t.Error(err)
		}
	})
	return v
}

// vnetClientOptions makes an rtctest peer use n: UDP4 only (vnet has no
// TCP for ICE), no loopback, no mDNS, and a short DTLS retransmit so that a
// lost handshake flight costs 100 ms rather than 1 s.
func vnetClientOptions(n *vnet.Net) rtctest.Options {
	return rtctest.Options{Configure: func(se *webrtc.SettingEngine) {
		se.SetNet(n)
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
		se.SetIncludeLoopbackCandidate(false)
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
		se.SetDTLSRetransmissionInterval(100 * time.Millisecond)
	}}
}

// joinWith is join with rtctest options for the client.
func joinWith(t testing.TB, call *Call, name string, caller bool, o rtctest.Options) *testClient {
	t.Helper()
	return joinPeer(t, call, name, caller, rtctest.NewPeer(t, o))
}

// joinPeer joins call with a client built by the caller: it answers the
// server's offers, trickles candidates both ways and, as caller, offers first.
func joinPeer(t testing.TB, call *Call, name string, caller bool, peer *rtctest.Peer) *testClient {
	t.Helper()
	c := &testClient{Peer: peer, sig: newLoopSignaler(t), errs: make(chan error, 4)}
	var ready sync.WaitGroup
	ready.Add(1)
	c.sig.onDesc = func(d webrtc.SessionDescription) {
		ready.Wait()
		if err := c.PC.SetRemoteDescription(d); err != nil {
			c.fail(err)
			return
		}
		if d.Type != webrtc.SDPTypeOffer {
			return
		}
		answer, err := c.PC.CreateAnswer(nil)
		if err == nil {
			err = c.PC.SetLocalDescription(answer)
		}
		if err == nil {
			err = c.part.HandleAnswer(answer.SDP)
		}
		if err != nil {
			c.fail(err)
		}
	}
	c.sig.onCand = func(ci webrtc.ICECandidateInit) {
		if err := c.PC.AddICECandidate(ci); err != nil {
			c.fail(err)
		}
	}
	p, err := call.Join(name, c.sig)
	if err != nil {
		t.Fatal(err)
	}
	c.part = p
	t.Cleanup(p.Close)
	c.PC.OnICECandidate(func(ci *webrtc.ICECandidate) {
		if ci != nil {
			_ = p.AddCandidate(ci.ToJSON())
		}
	})
	ready.Done()
	if caller {
		offer, err := c.PC.CreateOffer(nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.PC.SetLocalDescription(offer); err != nil {
			t.Fatal(err)
		}
		if err := p.HandleOffer(offer.SDP); err != nil {
			t.Fatal(err)
		}
	} else if err := p.SendOffer(); err != nil {
		t.Fatal(err)
	}
	return c
}

// selectedPair returns the selected ICE candidate pair of pc, or nil.
func selectedPair(pc *webrtc.PeerConnection) *webrtc.ICECandidatePair {
	for _, s := range pc.GetSenders() {
		if tr := s.Transport(); tr != nil {
			if pair, err := tr.ICETransport().GetSelectedCandidatePair(); err == nil && pair != nil {
				return pair
			}
		}
	}
	return nil
}

// waitConnected waits until both ends of c's connection report connected.
func waitConnected(t *testing.T, name string, c *testClient, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		cs, ss := c.PC.ConnectionState(), c.part.pc.ConnectionState()
		if cs == webrtc.PeerConnectionStateConnected && ss == webrtc.PeerConnectionStateConnected {
			return
		}
		select {
		case err := <-c.errs:
			t.Fatalf("%s: signalling: %v", name, err)
		case err := <-c.sig.failed:
			t.Fatalf("%s: sfu reports failure: %v", name, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not connected after %v: client %s, sfu %s", name, timeout, cs, ss)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSymmetricNATWithLossReachesSFU(t *testing.T) {
	start := time.Now()
	v := newVNetTopology(t)

	// The SFU's media socket is bound when New runs: its Net must already
	// have its address (be added to the router) by then.
	s, err := New(Config{Net: v.sfuNet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if addrs := s.MediaAddrs(); len(addrs) != 1 || addrs[0].IP.String() != vnetSFUIP {
		t.Fatalf("sfu media addresses %v, want one on %s", addrs, vnetSFUIP)
	}

	call := s.NewCall("vnet")
	defer call.Close()
	caller := joinWith(t, call, "natted", true, vnetClientOptions(v.callerNet))
	callee := joinWith(t, call, "public", false, vnetClientOptions(v.calleeNet))

	waitConnected(t, "caller", caller, 10*time.Second)
	waitConnected(t, "callee", callee, 10*time.Second)
	t.Logf("both connected after %v", time.Since(start).Round(time.Millisecond))

	// The caller reached the SFU from behind the NAT: its own pair is its
	// private host address to the SFU's public one; the SFU's pair is the
	// NAT's mapped address, learned as peer-reflexive (the client had no
	// STUN server, so it never signalled that address).
	cp := selectedPair(caller.PC)
	sp := selectedPair(caller.part.pc)
	if cp == nil || sp == nil {
		t.Fatalf("no selected pair: client %v, sfu %v", cp, sp)
	}
	t.Logf("caller pair: %s; sfu pair: %s", cp, sp)
	if cp.Local.Address != vnetCallerIP || cp.Local.Typ != webrtc.ICECandidateTypeHost {
		t.Errorf("caller local candidate %s, want host %s", cp.Local, vnetCallerIP)
	}
	if cp.Remote.Address != vnetSFUIP {
		t.Errorf("caller remote candidate %s, want the sfu at %s", cp.Remote, vnetSFUIP)
	}
	if sp.Remote.Address != vnetNATIP || sp.Remote.Typ != webrtc.ICECandidateTypePrflx {
		t.Errorf("sfu sees caller at %s, want prflx from the NAT's %s", sp.Remote, vnetNATIP)
	}
	if sp.Remote.Port == cp.Local.Port {
		t.Errorf("NAT kept the caller's port %d; the test expects a translated one", cp.Local.Port)
	}
	if sp.Local.Address != vnetSFUIP {
		t.Errorf("sfu local candidate %s, want %s", sp.Local, vnetSFUIP)
	}

	stopCaller, stopCallee := caller.StartSending(), callee.StartSending()
	defer stopCaller()
	defer stopCallee()
	for _, side := range []struct {
		name string
		c    *testClient
	}{{"caller", caller}, {"callee", callee}} {
		for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
			if err := side.c.WaitPackets(kind, vnetMinPkts, vnetWaitMedia); err != nil {
				t.Fatalf("%s: %v", side.name, err)
			}
			r := side.c.Received(kind)
			t.Logf("%s received %s: %d packets, %d sequence jumps", side.name, kind, r.Packets, r.SeqJumps)
			if r.Corrupt != 0 {
				t.Errorf("%s %s: %d corrupt payloads of %d", side.name, kind, r.Corrupt, r.Packets)
			}
		}
	}
	for _, c := range []*testClient{caller, callee} {
		select {
		case err := <-c.errs:
			t.Fatal(err)
		case err := <-c.sig.failed:
			t.Fatalf("sfu reports failure: %v", err)
		default:
		}
	}
	// The loss must really have happened, or this test proves nothing about it.
	if n := v.uplinkDrops.Load(); n == 0 {
		t.Error("the uplink loss filter dropped nothing")
	} else {
		t.Logf("uplink filter dropped %d chunks; total %v", n, time.Since(start).Round(time.Millisecond))
	}
}
