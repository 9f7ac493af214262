package sfu

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v4/vnet"
	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
)

// Loss repair under random loss and delay, measured per sequence number at
// the receiving client, and keyframe-request throttling under loss.
//
// Network (pion vnet): the SFU on a WAN; publisher and subscriber each on a
// LAN of their own behind a 1:1 NAT. A LAN router holds every packet for
// its MinDelay and drops pct % at random, in both directions, so every hop
// (publisher <-> SFU, SFU <-> subscriber) is delayed and lossy.

// lossVideo is the publisher's video: 30 fps of 7 packets of 1000 bytes,
// 210 packets/s (about 1.7 Mbit/s), plus audio at 50 packets/s.
var lossVideo = rtctest.VideoRate{FPS: 30, PacketsPerFrame: 7, Size: 1000}

const (
	lossWANCIDR  = "1.2.3.0/24"
	lossSFUIP    = "1.2.3.4"
	lossPubDelay = 20 * time.Millisecond // one way, publisher <-> SFU
	lossSubDelay = 50 * time.Millisecond // one way, SFU <-> subscriber
)

// pktClass is what a datagram carries, told from the header SRTP and SRTCP
// leave in clear (RFC 7983 demultiplexing, RFC 5761 RTCP packet types).
type pktClass int

const (
	classOther pktClass = iota // STUN, DTLS
	classMedia                 // RTP other than RTX
	classRTX                   // RTP retransmission (RFC 4588)
	classNACK                  // RTCP generic NACK
	classPLI                   // RTCP picture loss indication
	classRTCP                  // other RTCP (reports, TWCC, REMB)
	numClasses
)

var classNames = [numClasses]string{"other", "media", "rtx", "nack", "pli", "rtcp"}

func classify(b []byte) pktClass {
	if len(b) < 8 || b[0] < 128 || b[0] > 191 {
		return classOther
	}
	if pt := b[1]; pt >= 192 && pt <= 223 { // RTCP
		switch fmtField := b[0] & 0x1f; {
		case pt == 205 && fmtField == 1:
			return classNACK
		case pt == 206 && fmtField == 1:
			return classPLI
		}
		return classRTCP
	}
	if b[1]&0x7f == ptVP8RTX { // both clients and the SFU use 97 for VP8's RTX
		return classRTX
	}
	return classMedia
}

// lossSubNACK is how the subscriber asks for retransmissions: at most 20 ms
// after a gap, like a browser (pion's default waits up to 100 ms per round),
// and at most 5 times per packet. pion cannot space them by the round trip
// as browsers do, nor see RTX repairs (pion/interceptor#320).
var lossSubNACK = rtctest.NACKEvery(20*time.Millisecond, 5)

// lossyLink is one client's LAN.
type lossyLink struct {
	name string
	net  *vnet.Net
	// counts[up][class][dropped]: up is 1 for packets from the client.
	counts [2][numClasses][2]atomic.Int64
	// upRTP[ssrc][dropped]: RTP from the client by SSRC (the SSRC is
	// in clear in SRTP). Written on the router's goroutine only.
	upMu  sync.Mutex
	upRTP map[uint32]*[2]int64
}

// upCount is how many RTP packets of ssrc the client sent that passed
// and were dropped.
func (l *lossyLink) upCount(ssrc uint32) (passed, dropped int64) {
	l.upMu.Lock()
	defer l.upMu.Unlock()
	if c := l.upRTP[ssrc]; c != nil {
		return c[0], c[1]
	}
	return 0, 0
}

func (l *lossyLink) count(up bool, c pktClass) (passed, dropped int64) {
	d := 0
	if up {
		d = 1
	}
	return l.counts[d][c][0].Load(), l.counts[d][c][1].Load()
}

// String lists passed/dropped packets per direction and class.
func (l *lossyLink) String() string {
	var b strings.Builder
	for _, up := range []bool{true, false} {
		dir := "down"
		if up {
			dir = "up"
		}
		fmt.Fprintf(&b, "%s %s:", l.name, dir)
		var all, lost int64
		for c := range numClasses {
			p, d := l.count(up, c)
			all, lost = all+p+d, lost+d
			if p+d > 0 {
				fmt.Fprintf(&b, " %s %d/%d", classNames[c], d, p+d)
			}
		}
		fmt.Fprintf(&b, " (dropped/sent; %.1f %% dropped)", 100*float64(lost)/float64(max(all, 1)))
		if up {
			b.WriteString("; ")
		}
	}
	return b.String()
}

type lossyNet struct {
	wan      *vnet.Router
	sfuNet   *vnet.Net
	pub, sub *lossyLink
}

// newLossyNet builds the network; pct is the loss on every hop in each
// direction.
func newLossyNet(t *testing.T, pct int) *lossyNet {
	t.Helper()
	must := mustFunc(t)
	n := &lossyNet{}
	var lf logging.LoggerFactory
	n.wan, n.sfuNet, lf = vnetWAN(t, lossWANCIDR, lossSFUIP)
	seed := time.Now().UnixNano()
	t.Logf("loss %d %% per hop and direction; one-way delay publisher %v, subscriber %v",
		pct, lossPubDelay, lossSubDelay)
	link := func(i int, name string, delay time.Duration) *lossyLink {
		lanCIDR := fmt.Sprintf("10.0.%d.0/24", i)
		private := fmt.Sprintf("10.0.%d.2", i)
		public := fmt.Sprintf("1.2.3.%d", 10+i)
		lan, err := vnet.NewRouter(&vnet.RouterConfig{
			CIDR:          lanCIDR,
			StaticIPs:     []string{public + "/" + private},
			NATType:       &vnet.NATType{Mode: vnet.NATModeNAT1To1},
			MinDelay:      delay, // applies to every packet in and out of the LAN
			LoggerFactory: lf,
		})
		must(err)
		must(n.wan.AddRouter(lan))
		l := &lossyLink{name: name, upRTP: map[uint32]*[2]int64{}}
		l.net, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{private}})
		must(err)
		must(lan.AddNet(l.net))
		_, lanNet, err := net.ParseCIDR(lanCIDR)
		must(err)
		// A router's filters run on its one routing goroutine, once per
		// packet each way (outbound before NAT, inbound after it), so rng
		// needs no lock.
		rng := rand.New(rand.NewSource(seed + int64(i))) //nolint:gosec
		lan.AddChunkFilter(func(c vnet.Chunk) bool {
			src, ok := c.SourceAddr().(*net.UDPAddr)
			up := ok && lanNet.Contains(src.IP)
			class := classify(c.UserData())
			drop := rng.Intn(100) < pct
			d, dropped := 0, 0
			if up {
				d = 1
			}
			if drop {
				dropped = 1
			}
			l.counts[d][class][dropped].Add(1)
			if b := c.UserData(); up && len(b) >= 12 && (class == classMedia || class == classRTX) {
				ssrc := binary.BigEndian.Uint32(b[8:12])
				l.upMu.Lock()
				if l.upRTP[ssrc] == nil {
					l.upRTP[ssrc] = new([2]int64)
				}
				l.upRTP[ssrc][dropped]++
				l.upMu.Unlock()
			}
			return !drop
		})
		return l
	}
	n.pub = link(1, "publisher", lossPubDelay)
	n.sub = link(2, "subscriber", lossSubDelay)
	must(n.wan.Start()) // starts the LAN routers too
	// Registered first, so it runs after every peer and the SFU are closed.
	t.Cleanup(func() {
		if err := n.wan.Stop(); err != nil {
			t.Error(err)
		}
	})
	return n
}

// lossCall is a publisher and a subscriber in one call over a lossyNet.
// The subscriber tracks every video sequence number. Nothing is sent yet.
type lossCall struct {
	sfu      *SFU
	pub, sub *testClient
	seqs     *rtctest.SeqTracker
}

func newLossCall(t *testing.T, n *lossyNet) *lossCall {
	t.Helper()
	// The SFU's media socket is bound when New runs: its Net must already
	// be on the router.
	s, err := New(Config{Net: n.sfuNet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	start := time.Now()
	call := s.NewCall(t.Name())
	t.Cleanup(call.Close)
	c := &lossCall{sfu: s}
	c.pub = joinWith(t, call, "pub", true, vnetClientOptions(n.pub.net))
	c.sub = joinPeer(t, call, "sub", false, rtctest.NewPeerWith(t, vnetClientOptions(n.sub.net), lossSubNACK))
	// No media flows before the publisher sends, so no track has started
	// and this handler is the one that will see them.
	c.seqs = c.sub.TrackSequences()
	waitConnected(t, "pub", c.pub, 10*time.Second)
	waitConnected(t, "sub", c.sub, 10*time.Second)
	t.Logf("connected after %v", time.Since(start).Round(time.Millisecond))
	return c
}

// checkSignalling fails the test if signalling or the SFU reported an error.
func (c *lossCall) checkSignalling(t *testing.T) {
	t.Helper()
	for _, tc := range []*testClient{c.pub, c.sub} {
		select {
		case err := <-tc.errs:
			t.Fatal(err)
		case err := <-tc.sig.failed:
			t.Fatalf("sfu reports failure: %v", err)
		default:
		}
	}
}

// videoStats returns the SFU's numbers of the publisher's video track and
// of the subscriber's outgoing video track.
func (c *lossCall) videoStats(t *testing.T) (UpStats, DownStats) {
	t.Helper()
	var up UpStats
	var down DownStats
	var okUp, okDown bool
	for _, u := range c.pub.part.Stats().Up {
		if u.Kind == webrtc.RTPCodecTypeVideo.String() {
			up, okUp = u, true
		}
	}
	for _, d := range c.sub.part.Stats().Down {
		if d.Kind == webrtc.RTPCodecTypeVideo.String() {
			down, okDown = d, true
		}
	}
	if !okUp || !okDown {
		t.Fatalf("sfu has no video track: publisher's %v, subscriber's %v", okUp, okDown)
	}
	return up, down
}

func (c *lossCall) logStats(t *testing.T, n *lossyNet, r rtctest.SeqReport) {
	t.Helper()
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	t.Logf("subscriber video: %d expected, %d missed, %d repaired, %d unrepaired: residual loss %.3f %%; %d duplicates, %d corrupt, %d misnumbered",
		r.Expected, r.Missed, r.Repaired, r.Unrepaired, 100*r.Residual(), r.Duplicates, r.Corrupt, r.Misnumbered)
	t.Logf("subscriber repair time: p50 %v, p90 %v, p99 %v, max %v; longest still open %v",
		ms(r.RepairQuantile(0.5)), ms(r.RepairQuantile(0.9)), ms(r.RepairQuantile(0.99)), ms(r.MaxRepair()), ms(r.LongestOpen))
	up, down := c.videoStats(t)
	t.Logf("sfu, publisher's video: %d forwarded, %d sequence numbers NACKed, %d recovered over RTX, %d lost, %d duplicates, %d keyframe requests sent",
		up.Packets, up.NACKed, up.Recovered, up.Lost, up.Duplicates, up.KeyframeRequests)
	t.Logf("sfu, subscriber's video: %d sent, %d sequence numbers NACKed by it, %d retransmitted, %d PLIs received",
		down.Packets, down.NACKs, down.Retransmitted, down.PLIs)
	t.Logf("%s", n.pub)
	t.Logf("%s", n.sub)
	t.Logf("sfu's estimate of the subscriber's downlink: %d bit/s", c.sub.part.Stats().EstimatedBitrate)
}

const (
	lossCallLength  = 12 * time.Second
	lossSettle      = time.Second            // media keeps flowing while the last gaps are repaired
	lossMaxResidual = 0.005                  // of video packets, after repair
	lossMaxRepair   = 500 * time.Millisecond // from the packet after a gap to the missing one
)

// checkIntact fails the test if video arrived damaged or renumbered.
func checkIntact(t *testing.T, r rtctest.SeqReport) {
	t.Helper()
	if r.Corrupt != 0 {
		t.Errorf("%d corrupt video payloads", r.Corrupt)
	}
	if r.Misnumbered != 0 {
		t.Errorf("%d video packets arrived with a sequence number or timestamp out of step with the others'", r.Misnumbered)
	}
}

// TestLossRepairFivePercent: with 5 % loss on every hop, NACK/RTX repair
// leaves at most 0.5 % of the video missing at the receiver (still missing
// a second after the gap showed), and every packet that is repaired arrives
// within 500 ms of the gap showing.
func TestLossRepairFivePercent(t *testing.T) {
	n := newLossyNet(t, 5)
	c := newLossCall(t, n)

	stop := c.pub.StartMedia(lossVideo)
	defer stop()
	time.Sleep(lossCallLength)
	cutoff := time.Now()
	time.Sleep(lossSettle)
	r := c.seqs.Report(cutoff, time.Now())
	c.checkSignalling(t)
	c.logStats(t, n, r)

	if want := int(lossCallLength.Seconds()) * lossVideo.PacketsPerSecond() * 9 / 10; r.Expected < want {
		t.Fatalf("subscriber saw %d video sequence numbers, want at least %d", r.Expected, want)
	}
	// The loss must really have happened on both legs, or this proves nothing.
	if _, d := n.pub.count(true, classMedia); d == 0 {
		t.Fatal("no media dropped on the publisher's uplink")
	}
	if _, d := n.sub.count(false, classMedia); d == 0 || r.Missed == 0 {
		t.Fatalf("no media dropped on the subscriber's downlink (%d dropped, %d missed)", d, r.Missed)
	}
	up, down := c.videoStats(t)
	// Each lost packet is asked for about once: a packet that arrived
	// (over RTX too) is not NACKed again (pion's generator asks up to its
	// limit, 5 times here, for every one).
	if up.Recovered == 0 || up.NACKed < up.Recovered || up.NACKed > 2*up.Recovered {
		t.Errorf("the sfu NACKed %d sequence numbers and recovered %d from the publisher over RTX", up.NACKed, up.Recovered)
	}
	if down.NACKs == 0 || down.Retransmitted == 0 || down.Retransmitted > down.NACKs {
		t.Errorf("the subscriber NACKed %d sequence numbers, the sfu retransmitted %d", down.NACKs, down.Retransmitted)
	}
	checkIntact(t, r)
	if res := r.Residual(); res > lossMaxResidual {
		t.Errorf("residual video loss %.3f %% (%d of %d), want <= %.1f %%",
			100*res, r.Unrepaired, r.Expected, 100*lossMaxResidual)
	}
	if m := r.MaxRepair(); m > lossMaxRepair {
		t.Errorf("a packet took %v to repair; %d of %d repairs took longer than %v",
			m.Round(time.Millisecond), r.Repaired-r.RepairedWithin(lossMaxRepair), r.Repaired, lossMaxRepair)
	}
}

// TestLossAtStreamStartKeepsNumbering: a subscriber's outgoing track gets
// its source (addSink -> setSource -> sourceChanged) before the first
// packet. If the second packet is lost, the gap must survive so the
// subscriber can NACK it, and the repaired packet must take its own number,
// not the first packet's; the packets of one frame keep one timestamp.
func TestLossAtStreamStartKeepsNumbering(t *testing.T) {
	type pkt struct {
		seq uint16
		ts  uint32
	}
	in := []pkt{{100, 9000}, {102, 9000}, {101, 9000}, {103, 12000}} // 101 lost, then repaired
	r := newRewriter(3000)
	r.sourceChanged()
	out := make([]pkt, len(in))
	for i, p := range in {
		out[i].seq, out[i].ts = r.rewrite(7, p.seq, p.ts)
	}
	for i := range in {
		if out[i].seq-in[i].seq != out[0].seq-in[0].seq || out[i].ts-in[i].ts != out[0].ts-in[0].ts {
			t.Errorf("packets %v came out as %v: numbering not shifted by a constant", in, out)
			break
		}
	}
}

// kfInterval is Config.KeyframeInterval's default: at most one keyframe
// request per interval reaches a publisher.
const kfInterval = 500 * time.Millisecond

const (
	heavyLossPct    = 20
	heavyCallLength = 10 * time.Second
	heavyWindow     = time.Second
	// Every window must bring at least this share of the video packet
	// rate (after repair) to the subscriber.
	heavyMinShare = 0.5
)

// TestHeavyLossKeepsFlowingAndThrottlesPLI: with 20 % loss on every hop and
// a subscriber that asks for a keyframe on every gap, video keeps arriving
// in every second of the call, and the publisher gets at most one keyframe
// request per 500 ms.
func TestHeavyLossKeepsFlowingAndThrottlesPLI(t *testing.T) {
	n := newLossyNet(t, heavyLossPct)
	c := newLossCall(t, n)
	var plis, pliErrs atomic.Int64
	c.seqs.OnGap(func(int) {
		if err := c.sub.SendPLI(); err != nil {
			pliErrs.Add(1)
			return
		}
		plis.Add(1)
	})

	start := time.Now()
	stop := c.pub.StartMedia(lossVideo)
	defer stop()
	time.Sleep(heavyCallLength)
	c.seqs.OnGap(nil)
	cutoff := time.Now()
	// Let a request held by the throttle go out, and the last repairs land.
	time.Sleep(lossSettle)
	elapsed := time.Since(start)
	atPub := c.pub.KeyframeRequests()
	up, down := c.videoStats(t)
	r := c.seqs.Report(cutoff, time.Now())
	c.checkSignalling(t)
	c.logStats(t, n, r)

	checkIntact(t, r)
	windows := c.seqs.Arrivals(start, cutoff, heavyWindow)
	t.Logf("video packets arriving per %v: %v (sent: %d per window)",
		heavyWindow, windows, int(heavyWindow.Seconds()*float64(lossVideo.PacketsPerSecond())))
	minPkts := int(heavyMinShare * heavyWindow.Seconds() * float64(lossVideo.PacketsPerSecond()))
	for i, got := range windows {
		if got < minPkts {
			t.Errorf("window %d (%v-%v): %d video packets arrived, want at least %d",
				i, time.Duration(i)*heavyWindow, time.Duration(i+1)*heavyWindow, got, minPkts)
		}
	}

	maxReq := int64(elapsed/kfInterval) + 2
	_, pliDropped := n.pub.count(false, classPLI)
	t.Logf("keyframe requests over %v: subscriber sent %d PLIs (%d failed to send), sfu received %d, sfu sent %d, %d dropped on the way, publisher got %d (allowed at most %d)",
		elapsed.Round(time.Millisecond), plis.Load(), pliErrs.Load(), down.PLIs, up.KeyframeRequests, pliDropped, atPub, maxReq)
	if plis.Load() < int64(heavyCallLength/(50*time.Millisecond)) {
		t.Fatalf("the subscriber sent only %d PLIs: not the storm this test needs", plis.Load())
	}
	sent := int64(up.KeyframeRequests)
	if sent > maxReq || atPub > maxReq {
		t.Errorf("keyframe requests not throttled: sfu sent %d, publisher got %d in %v, want at most %d",
			sent, atPub, elapsed.Round(time.Millisecond), maxReq)
	}
	// Throttled, not blocked: while the subscriber keeps asking, one
	// request per interval goes out (and at 20 % loss most arrive).
	if minReq := int64(heavyCallLength/kfInterval) * 3 / 4; sent < minReq || atPub < minReq/2 {
		t.Errorf("too few keyframe requests: sfu sent %d, publisher got %d, want at least %d and %d",
			sent, atPub, minReq, minReq/2)
	}
}

// waitUntil polls cond every millisecond until it holds (returning when)
// or timeout passes.
func waitUntil(cond func() bool, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for {
		now := time.Now()
		if cond() {
			return now, true
		}
		if now.After(deadline) {
			return now, false
		}
		time.Sleep(time.Millisecond)
	}
}

// TestKeyframeRequestLatency: once the throttle interval has passed, a
// subscriber's PLI reaches the publisher at once (one round trip plus a
// little); a second one 100 ms later is held until the interval ends and
// then delivered, not dropped.
func TestKeyframeRequestLatency(t *testing.T) {
	const (
		maxFirst = 100 * time.Millisecond // loopback round trip is < 1 ms
		slack    = 30 * time.Millisecond  // timer and polling slack for the held one
	)
	a, b, _ := aliceSendsToBob(t, "kf")
	// The requests made when bob subscribed must be out and delivered, and
	// the interval after the last one over.
	last := a.KeyframeRequests()
	for quiet := time.Now(); time.Since(quiet) < kfInterval+100*time.Millisecond; time.Sleep(10 * time.Millisecond) {
		if n := a.KeyframeRequests(); n != last {
			last, quiet = n, time.Now()
		}
	}
	if p := selectedPair(b.PC); p != nil {
		t.Logf("bob's pair: %s", p)
	}

	sent1 := time.Now()
	if err := b.SendPLI(); err != nil {
		t.Fatal(err)
	}
	got1, ok := waitUntil(func() bool { return a.KeyframeRequests() > last }, 2*time.Second)
	if !ok {
		t.Fatal("the first PLI never reached the publisher")
	}
	time.Sleep(time.Until(sent1.Add(100 * time.Millisecond)))
	sent2 := time.Now()
	if err := b.SendPLI(); err != nil {
		t.Fatal(err)
	}
	got2, ok := waitUntil(func() bool { return a.KeyframeRequests() > last+1 }, 2*time.Second)
	if !ok {
		t.Fatal("the second PLI was lost: it never reached the publisher")
	}
	time.Sleep(kfInterval + 100*time.Millisecond)
	extra := a.KeyframeRequests() - last - 2

	first, held := got1.Sub(sent1), got2.Sub(got1)
	t.Logf("first PLI reached the publisher after %v; second (sent %v later) after %v, %v after the first; %d more",
		first.Round(10*time.Microsecond), sent2.Sub(sent1).Round(time.Millisecond),
		got2.Sub(sent2).Round(time.Millisecond), held.Round(100*time.Microsecond), extra)
	if first > maxFirst {
		t.Errorf("first PLI took %v to reach the publisher, want < %v", first, maxFirst)
	}
	if held < kfInterval-sent2.Sub(sent1) {
		t.Errorf("second PLI reached the publisher %v after the first: not held for the %v interval", held, kfInterval)
	}
	if held > kfInterval+slack {
		t.Errorf("second PLI reached the publisher %v after the first, want <= %v (+%v slack)", held, kfInterval, slack)
	}
	if extra != 0 {
		t.Errorf("publisher got %d keyframe requests more than the two asked for", extra)
	}
}
