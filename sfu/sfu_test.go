package sfu

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"go.uber.org/goleak"

	"videochat/internal/rtctest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// verifyNoLeaks checks, when the test ends, that it left no goroutine of
// its own running (TestMain catches leaks only at the end of the package).
// Call it before anything else registers a cleanup: cleanups run last in,
// first out, so this one runs after the test's SFU and peers closed.
func verifyNoLeaks(t testing.TB) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, before) })
}

// loopSignaler delivers the SFU's messages to a test client, in order, on
// a goroutine of its own (the Signaler contract forbids blocking).
type loopSignaler struct {
	onDesc func(webrtc.SessionDescription)
	onCand func(webrtc.ICECandidateInit)
	msgs   chan func()
	failed chan error
	setup  chan time.Duration // ConnectObserver
	done   chan struct{}
	wg     sync.WaitGroup
}

func newLoopSignaler(t testing.TB) *loopSignaler {
	s := &loopSignaler{msgs: make(chan func(), 256), failed: make(chan error, 1), done: make(chan struct{}),
		setup:  make(chan time.Duration, 4),
		onDesc: func(webrtc.SessionDescription) {}, onCand: func(webrtc.ICECandidateInit) {}}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			select {
			case f := <-s.msgs:
				f()
			case <-s.done:
				return
			}
		}
	}()
	t.Cleanup(func() { close(s.done); s.wg.Wait() })
	return s
}

func (s *loopSignaler) SendDescription(d webrtc.SessionDescription) { s.msgs <- func() { s.onDesc(d) } }
func (s *loopSignaler) SendCandidate(c webrtc.ICECandidateInit)     { s.msgs <- func() { s.onCand(c) } }
func (s *loopSignaler) Interrupted()                                {}
func (s *loopSignaler) Restored()                                   {}

// Connected implements ConnectObserver.
func (s *loopSignaler) Connected(d time.Duration) {
	select {
	case s.setup <- d:
	default:
	}
}

func (s *loopSignaler) Failed(err error) {
	select {
	case s.failed <- err:
	default:
	}
}

type testClient struct {
	*rtctest.Peer
	part *Participant
	sig  *loopSignaler
	errs chan error
}

func (c *testClient) fail(err error) {
	select {
	case c.errs <- err:
	default:
	}
}

// join connects a pion client to call. As caller it sends an offer; as
// callee it answers the server's offer.
func join(t *testing.T, _ *SFU, call *Call, name string, caller bool) *testClient {
	t.Helper()
	return joinWith(t, call, name, caller, rtctest.Options{})
}

// aliceSendsToBob starts a call in which alice sends media (until the test
// ends) and bob has received some of her video.
func aliceSendsToBob(t *testing.T, id string) (a, b *testClient, call *Call) {
	t.Helper()
	s := newTestSFU(t)
	call = s.NewCall(id)
	t.Cleanup(call.Close)
	a = join(t, s, call, "alice", true)
	b = join(t, s, call, "bob", false)
	t.Cleanup(a.StartSending())
	if err := b.WaitPackets(webrtc.RTPCodecTypeVideo, 10, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return a, b, call
}

func newTestSFU(t testing.TB) *SFU {
	t.Helper()
	return newTestSFUWith(t, Config{})
}

// newTestSFUWith is newTestSFU with cfg (loopback candidates added).
func newTestSFUWith(t testing.TB, cfg Config) *SFU {
	t.Helper()
	verifyNoLeaks(t)
	cfg.IncludeLoopback = true
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestCallForwardsMediaBothWays(t *testing.T) {
	for _, batched := range []bool{false, true} {
		t.Run(fmt.Sprintf("batched-reads=%v", batched), func(t *testing.T) {
			callForwardsMediaBothWays(t, newTestSFUWith(t, Config{BatchedReads: batched}))
		})
	}
}

func callForwardsMediaBothWays(t *testing.T, s *SFU) {
	call := s.NewCall("c1")
	defer call.Close()
	a := join(t, s, call, "alice", true)
	b := join(t, s, call, "bob", false)
	stopA, stopB := a.StartSending(), b.StartSending()
	defer stopA()
	defer stopB()

	for _, c := range []*testClient{a, b} {
		for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeAudio, webrtc.RTPCodecTypeVideo} {
			if err := c.WaitPackets(kind, 50, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			r := c.Received(kind)
			if r.Corrupt != 0 {
				t.Errorf("%s: %d corrupt payloads", kind, r.Corrupt)
			}
		}
	}
	select {
	case err := <-a.errs:
		t.Fatal(err)
	case err := <-b.errs:
		t.Fatal(err)
	default:
	}
}

func TestPLIReachesPublisherThrottled(t *testing.T) {
	a, b, _ := aliceSendsToBob(t, "c2")
	time.Sleep(600 * time.Millisecond) // let the join-time requests pass the throttle
	before := a.KeyframeRequests()
	for i := 0; i < 20; i++ { // a burst of 20 PLIs within ~200 ms
		if err := b.SendPLI(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	deadline := time.Now().Add(2 * time.Second)
	for a.KeyframeRequests() == before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(700 * time.Millisecond)
	got := a.KeyframeRequests() - before
	if got < 1 || got > 2 {
		t.Fatalf("publisher got %d keyframe requests for a 200 ms burst of 20 PLIs, want 1..2", got)
	}
}

func TestLeaveStopsForwarding(t *testing.T) {
	a, b, call := aliceSendsToBob(t, "c3")
	b.part.Close()
	time.Sleep(100 * time.Millisecond)
	n := b.Received(webrtc.RTPCodecTypeAudio).Packets
	time.Sleep(300 * time.Millisecond)
	if m := b.Received(webrtc.RTPCodecTypeAudio).Packets; m != n {
		t.Fatalf("forwarding continued after leave: %d -> %d packets", n, m)
	}
	if got := len(call.others(a.part)); got != 0 {
		t.Fatalf("call still has %d other participants", got)
	}
}

func TestClosedCallRefusesJoin(t *testing.T) {
	s := newTestSFU(t)
	call := s.NewCall("c4")
	call.Close()
	if _, err := call.Join("x", newLoopSignaler(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("join after close: %v, want ErrClosed", err)
	}
}

func TestBadDescriptionsAreErrors(t *testing.T) {
	s := newTestSFU(t)
	call := s.NewCall("c5")
	defer call.Close()
	p, err := call.Join("x", newLoopSignaler(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := p.HandleOffer("garbage"); err == nil {
		t.Error("garbage offer accepted")
	}
	if err := p.HandleAnswer("v=0"); err == nil {
		t.Error("answer without an offer accepted")
	}
	if err := p.AddCandidate(webrtc.ICECandidateInit{Candidate: "candidate:nonsense"}); err != nil {
		t.Errorf("early candidate should be queued, got %v", err)
	}
}
