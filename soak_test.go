package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"videochat/internal/rtctest"
	"videochat/signaling"
)

// The churn soak (issue 10): pairs of pion clients log in, call each other,
// exchange media and end the call in one of four ways, over and over, for
// the test's duration. Afterwards every goroutine, file descriptor and heap
// byte of the process (server and clients) must be back to within a small
// margin of the baseline, and every call's other participant must have been
// told (leave, with the reason the way of ending implies).
//
// Scale: SOAK_CLIENTS (default 200) and SOAK_DURATION (default 2m); -short
// runs 20 clients for 10 s.
//
// Margins, after everything is closed and waited for: goroutines and file
// descriptors at most soakSlack above the baseline, the heap (after GC) at
// most soakHeapSlack above it. The baseline is taken after a warm-up call,
// so that pion's and the runtime's once-only state already exists.
const (
	soakSlack     = 5
	soakHeapSlack = 8 << 20
)

// How a call ends, one of each in turn.
type soakEnd int

const (
	endHangup     soakEnd = iota // the ender sends leave: the other gets "hangup"
	endCloseFrame                // the ender's WebSocket closes with a close frame: "disconnected"
	endVanish                    // the ender's TCP connection is reset (no close frame), its media goes on: "disconnected" after the grace
	endPCClose                   // the ender's PeerConnection closes, its WebSocket stays: both get "connection failed"
	numEnds
)

func (e soakEnd) String() string {
	return [...]string{"hangup", "close frame", "vanish", "pc close"}[e]
}

// wantReason is the reason the other participant's leave carries.
func (e soakEnd) wantReason() string {
	return [...]string{signaling.ReasonHangup, signaling.ReasonGone, signaling.ReasonGone, signaling.ReasonFailed}[e]
}

func soakScale(t *testing.T) (clients int, d time.Duration) {
	clients, d = 200, 2*time.Minute
	if testing.Short() {
		clients, d = 20, 10*time.Second
	}
	if v := os.Getenv("SOAK_CLIENTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 2 {
			t.Fatalf("SOAK_CLIENTS=%q: want a number >= 2", v)
		}
		clients = n
	}
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d <= 0 || d > 10*time.Minute {
			t.Fatalf("SOAK_DURATION=%q: want a duration up to 10m", v)
		}
	}
	return clients &^ 1, d
}

func TestChurnSoak(t *testing.T) {
	clients, duration := soakScale(t)
	app := startSoakApp(t, func(c *Config) {
		c.Grace = soakGrace
		c.Limits.MaxConnsPerIP = 4 * clients
		c.Limits.CallAttempts = 1 << 20
		c.Limits.CallAttemptsPerIP = 1 << 20
	})
	var st soakStats

	// Warm-up: one call of each kind of ending, so that everything created
	// once per process exists before the baseline.
	warm := newSoakPair(t, app, "warm-a", "warm-b", &st)
	for k := range int(numEnds) {
		if err := warm.round(k, soakEnd(k)); err != nil {
			t.Fatalf("warm-up call (%v): %v", soakEnd(k), err)
		}
	}
	warm.close()
	waitSettled(t, app, 0, 0, 30*time.Second) // no calls left; goroutines quiet
	base := soakMeasure()
	t.Logf("baseline: %v", base)

	// The churn.
	start := time.Now()
	stop := start.Add(duration)
	hard := stop.Add(soakStep + soakGrace) // a call under way when the churn stops ends by then
	var wg sync.WaitGroup
	for i := range clients / 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := newSoakPair(t, app, fmt.Sprintf("soak%03da", i), fmt.Sprintf("soak%03db", i), &st)
			p.hard, p.stop = hard, stop
			defer p.close()
			// Stagger the first calls so that setups spread out.
			time.Sleep(time.Duration(i%40) * 50 * time.Millisecond)
			for k := 0; time.Now().Before(stop); k++ {
				end := soakEnd((i + k) % int(numEnds))
				if err := p.round(k, end); errors.Is(err, errSoakOver) {
					break
				} else if err != nil {
					st.fail(fmt.Errorf("%s/%s call %d (%v): %w", p.a.name, p.b.name, k, end, err))
					p.reset()
					time.Sleep(500 * time.Millisecond)
				}
			}
		}()
	}
	wg.Wait()
	churn := time.Since(start)
	settle := time.Now()
	after := waitSettled(t, app, base.goroutines+soakSlack, base.fds+soakSlack, 60*time.Second)
	t.Logf("after:    %v (settled in %v)", after, time.Since(settle).Round(time.Millisecond))
	t.Logf("%d clients for %v: %d calls set up with media both ways (at most %d at once), %d ended (hangup %d, close frame %d, vanish %d, pc close %d); "+
		"leaves received by the other participant %d, with the expected reason %d; %d failures",
		clients, churn.Round(time.Second), st.calls.Load(), st.peak.Load(), st.ended(), st.ends[endHangup].Load(), st.ends[endCloseFrame].Load(),
		st.ends[endVanish].Load(), st.ends[endPCClose].Load(), st.leaves.Load(), st.leavesOK.Load(), st.failures.Load())

	for _, err := range st.errs() {
		t.Error(err)
	}
	if n := st.failures.Load(); n > 0 {
		t.Errorf("%d of %d calls failed (first ones above)", n, st.calls.Load()+n)
	}
	if st.calls.Load() < int64(clients/2) {
		t.Errorf("only %d calls in the soak with %d clients", st.calls.Load(), clients)
	}
	if st.leavesOK.Load() != st.ended() {
		t.Errorf("%d calls ended but the other participant got the right leave %d times", st.ended(), st.leavesOK.Load())
	}
	if after.goroutines > base.goroutines+soakSlack {
		t.Errorf("goroutines: %d after, %d before (margin %d)", after.goroutines, base.goroutines, soakSlack)
	}
	if after.fds > base.fds+soakSlack {
		t.Errorf("open files: %d after, %d before (margin %d)", after.fds, base.fds, soakSlack)
	}
	if after.heap > base.heap+soakHeapSlack {
		t.Errorf("heap: %.1f MiB after, %.1f MiB before (margin %d MiB)", mib(after.heap), mib(base.heap), soakHeapSlack>>20)
	}
}

// startSoakApp is startApp with a quiet log: thousands of calls at debug
// level would drown the output (and the CPU). Errors still go to the test log.
func startSoakApp(t *testing.T, mod func(*Config)) *App {
	cfg := Config{Addr: "127.0.0.1:0", UDPPort: 0, IncludeLoopback: true}
	mod(&cfg)
	h := slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn})
	app, err := NewApp(cfg, slog.New(soakLogFilter{h}))
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- app.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := app.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	return app
}

// soakLogFilter passes errors, and the warnings that explain a failed call
// other than the ones the soak causes on purpose.
type soakLogFilter struct{ slog.Handler }

func (f soakLogFilter) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		return f.Handler.Handle(ctx, r)
	}
	if r.Message != "peer connection failed" {
		return nil
	}
	show := true
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" && strings.Contains(a.Value.String(), "peer connection closed") {
			show = false // a client closed its PeerConnection
		}
		return true
	})
	if show {
		return f.Handler.Handle(ctx, r)
	}
	return nil
}

func (f soakLogFilter) WithAttrs(as []slog.Attr) slog.Handler {
	return soakLogFilter{f.Handler.WithAttrs(as)}
}

func (f soakLogFilter) WithGroup(g string) slog.Handler { return soakLogFilter{f.Handler.WithGroup(g)} }

type soakStats struct {
	calls    atomic.Int64 // set up, media both ways
	live     atomic.Int64 // calls with media flowing now
	peak     atomic.Int64 // most calls with media flowing at once
	ends     [numEnds]atomic.Int64
	leaves   atomic.Int64 // leave received by the other participant
	leavesOK atomic.Int64 // ... naming the ender, with the expected reason
	failures atomic.Int64
	mu       sync.Mutex
	first    []error
}

func (s *soakStats) ended() int64 {
	var n int64
	for i := range s.ends {
		n += s.ends[i].Load()
	}
	return n
}

func (s *soakStats) fail(err error) {
	s.failures.Add(1)
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.first) < 10 {
		s.first = append(s.first, err)
	}
}

func (s *soakStats) errs() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first
}

type soakUsage struct {
	goroutines, fds int
	heap            uint64
}

func (u soakUsage) String() string {
	return fmt.Sprintf("%d goroutines, %d open files, heap %.1f MiB", u.goroutines, u.fds, mib(u.heap))
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

func soakMeasure() soakUsage {
	runtime.GC()
	runtime.GC() // the second also frees what finalizers released
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fds := -1
	if ents, err := os.ReadDir("/proc/self/fd"); err == nil {
		fds = len(ents)
	}
	return soakUsage{goroutines: runtime.NumGoroutine(), fds: fds, heap: ms.HeapAlloc}
}

// waitSettled waits until the SFU has no calls and the goroutine and file
// counts are at most maxG and maxFD (0: until they stop changing for a
// second), and returns the soakUsage then. On timeout it logs the goroutines.
func waitSettled(t *testing.T, app *App, maxG, maxFD int, timeout time.Duration) soakUsage {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last soakUsage
	stable := 0
	for {
		u := soakMeasure()
		calls := len(app.sfu.Stats())
		if u.goroutines == last.goroutines && u.fds == last.fds {
			stable++
		} else {
			stable = 0
		}
		last = u
		ok := calls == 0
		if maxG > 0 {
			ok = ok && u.goroutines <= maxG && u.fds <= maxFD && stable >= 2
		} else {
			ok = ok && stable >= 5
		}
		if ok {
			return u
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			_ = pprof.Lookup("goroutine").WriteTo(&b, 1)
			t.Logf("not settled after %v: %v, %d calls in the SFU; goroutines:\n%s", timeout, u, calls, b.String())
			return u
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// soakPair is two users who call each other, one call at a time.
type soakPair struct {
	t    *testing.T
	hard time.Time // no wait goes beyond this
	stop time.Time // a call whose set-up slot comes after this is not started
	app  *App
	url  string
	a, b *soakClient
	st   *soakStats
}

func newSoakPair(t *testing.T, app *App, a, b string, st *soakStats) *soakPair {
	return &soakPair{t: t, app: app, url: wsURLOf(app.URL(), "/ws"), a: &soakClient{name: a}, b: &soakClient{name: b}, st: st}
}

// errSoakOver: the churn ended while the pair waited to set up a call.
var errSoakOver = errors.New("the churn is over")

const soakStep = 30 * time.Second // every wait for a message or media; generous on purpose

// step bounds a wait by the pair's hard deadline (at least 1 ms).
func (p *soakPair) step(d time.Duration) time.Duration {
	if p.hard.IsZero() {
		return d
	}
	return max(min(d, time.Until(p.hard)), time.Millisecond)
}

// round is one call: log in (if needed), k's parity picks the caller, and
// the call ends as end says, by the caller or the callee (k/2's parity).
func (p *soakPair) round(k int, end soakEnd) error {
	release := p.setupSlot()
	defer release()
	if !p.stop.IsZero() && time.Now().After(p.stop) {
		// With many clients, a pair may wait for its set-up slot past the
		// end of the churn: it would then have only what is left of the
		// hard deadline, and fail for the test's budget, not the server.
		return errSoakOver
	}
	for _, c := range []*soakClient{p.a, p.b} {
		if err := c.ensureLogin(p.url); err != nil {
			return err
		}
		c.drain()
	}
	caller, callee := p.a, p.b
	if k%2 == 1 {
		caller, callee = p.b, p.a
	}
	for _, c := range []*soakClient{caller, callee} {
		if err := c.newPeer(p.t); err != nil {
			return err
		}
	}
	defer caller.closePeer()
	defer callee.closePeer()
	if err := caller.call(callee.name); err != nil {
		return err
	}
	if m, err := caller.expect("accepted", p.step(soakStep)); err != nil {
		return fmt.Errorf("caller: %w", err)
	} else if m.Name != callee.name {
		return fmt.Errorf("accepted names %q", m.Name)
	}
	if m, err := callee.expect("offer", p.step(soakStep)); err != nil {
		return fmt.Errorf("callee: %w", err)
	} else if m.Name != caller.name {
		return fmt.Errorf("offer names %q", m.Name)
	}
	caller.startMedia()
	callee.startMedia()
	live := p.st.live.Add(1)
	defer p.st.live.Add(-1)
	for peak := p.st.peak.Load(); live > peak && !p.st.peak.CompareAndSwap(peak, live); peak = p.st.peak.Load() {
	}
	for _, c := range []*soakClient{caller, callee} {
		for _, kind := range kinds {
			if err := c.peer.WaitPackets(kind, 5, p.step(soakStep)); err != nil {
				return fmt.Errorf("%s: %w; %s", c.name, err, p.diagnose(caller, callee))
			}
			if r := c.peer.Received(kind); r.Corrupt != 0 {
				return fmt.Errorf("%s: %d of %d %s payloads corrupt", c.name, r.Corrupt, r.Packets, kind)
			}
		}
	}
	p.st.calls.Add(1)
	release()
	time.Sleep(rand.N(1500 * time.Millisecond)) // talk a little

	ender, other := caller, callee
	if (k/2)%2 == 1 {
		ender, other = callee, caller
	}
	switch end {
	case endHangup:
		ender.send(signaling.Message{Type: "leave", Name: other.name})
	case endCloseFrame:
		ender.closeWS(true)
	case endVanish:
		ender.closeWS(false) // its PeerConnection and media go on: only the grace ends the call
	case endPCClose:
		ender.closePeer()
	}
	m, err := other.expect("leave", p.step(soakStep+graceFor(end)))
	if err != nil {
		return fmt.Errorf("%s after %s's %v: %w", other.name, ender.name, end, err)
	}
	p.st.ends[end].Add(1)
	p.st.leaves.Add(1)
	if m.Name != ender.name || m.Reason != end.wantReason() {
		return fmt.Errorf("%s after %s's %v: leave %q %q, want %q", other.name, ender.name, end, m.Name, m.Reason, end.wantReason())
	}
	p.st.leavesOK.Add(1)
	if end == endPCClose { // the ender is told too
		if m, err := ender.expect("leave", p.step(soakStep)); err != nil || m.Reason != signaling.ReasonFailed {
			return fmt.Errorf("%s after closing its PeerConnection: %+v %v", ender.name, m, err)
		}
	}
	return nil
}

// soakGrace is the App's Grace: how long a vanished client's session (and
// call) is held for a resume. It also sets the SFU's ICE timeouts (failed
// after Grace, disconnected after Grace/3 of silence, at most 5 s): with 2 s
// a loaded machine's stalls of ~0.7 s (with -race, beside other tests) fail
// healthy calls, so 5 s (disconnected after 1.7 s).
const soakGrace = 5 * time.Second

func graceFor(e soakEnd) time.Duration {
	if e == endVanish {
		return soakGrace
	}
	return 0
}

// soakSetups bounds the calls being set up at once (login, offer/answer,
// ICE, DTLS, first media), 2 per core: a burst of DTLS handshakes under
// -race on a shared 2-core machine otherwise starves ICE consent and the
// DTLS deadline, and healthy calls fail for want of CPU, not for a bug.
// Calls already up are not limited: about clients/2 run at once.
var soakSetups = make(chan struct{}, 2*runtime.GOMAXPROCS(0))

// setupSlot takes a setup slot; the returned release is idempotent.
func (p *soakPair) setupSlot() (release func()) {
	soakSetups <- struct{}{}
	var once sync.Once
	return func() { once.Do(func() { <-soakSetups }) }
}

// diagnose describes a call whose media did not arrive: both clients'
// connection states and packets, and the SFU's numbers for the call.
func (p *soakPair) diagnose(caller, callee *soakClient) string {
	var b strings.Builder
	for _, c := range []*soakClient{caller, callee} {
		pc := c.currentPeer()
		if pc == nil {
			fmt.Fprintf(&b, "%s: no peer; ", c.name)
			continue
		}
		fmt.Fprintf(&b, "%s: pc %v ice %v signaling %v, received audio %+v video %+v, transceivers:", c.name,
			pc.PC.ConnectionState(), pc.PC.ICEConnectionState(), pc.PC.SignalingState(),
			pc.Received(webrtc.RTPCodecTypeAudio), pc.Received(webrtc.RTPCodecTypeVideo))
		for _, tr := range pc.PC.GetTransceivers() {
			fmt.Fprintf(&b, " %s/%v/%v", tr.Mid(), tr.Kind(), tr.Direction())
		}
		for _, port := range localPorts(pc) {
			fmt.Fprintf(&b, " port %d", port)
			if v, ok := portsUsed.Load(port); ok {
				u := v.(portUse)
				fmt.Fprintf(&b, " (used by %s's PC closed %v before)", u.name, time.Since(u.closed).Round(time.Millisecond))
			}
		}
		b.WriteString("; ")
	}
	for _, c := range []*soakClient{caller, callee} {
		fmt.Fprintf(&b, "%s got:", c.name)
		for more := true; more; {
			select {
			case m, ok := <-c.msgs:
				if !ok {
					b.WriteString(" (closed)")
					more = false
					break
				}
				fmt.Fprintf(&b, " %s %q %q %q;", m.Type, m.Name, m.Reason, m.Message)
			default:
				more = false
			}
		}
		b.WriteString("; ")
	}
	for id, parts := range p.app.sfu.Stats() {
		if len(parts) == 0 || (parts[0].Name != caller.name && parts[0].Name != callee.name) {
			continue
		}
		fmt.Fprintf(&b, "sfu call %s:", id)
		for _, ps := range parts {
			fmt.Fprintf(&b, " %s up", ps.Name)
			for _, u := range ps.Up {
				fmt.Fprintf(&b, " %s:%d", u.Kind, u.Packets)
			}
			b.WriteString(" down")
			for _, d := range ps.Down {
				fmt.Fprintf(&b, " %s:%d(werr %d)", d.Kind, d.Packets, d.WriteErrors)
			}
			b.WriteString(";")
		}
	}
	return b.String()
}

// reset drops both users after a failed round (close frames), so the next
// round starts afresh.
func (p *soakPair) reset() {
	for _, c := range []*soakClient{p.a, p.b} {
		c.closePeer()
		c.closeWS(true)
	}
}

func (p *soakPair) close() { p.reset() }

// soakClient is one user: a WebSocket speaking the protocol (it answers the
// server's offers, relays candidates) and a pion Peer per call. Unlike
// wsPeer it reports errors instead of failing the test from its goroutines,
// and registers nothing with t.Cleanup, so that a closed client leaves
// nothing behind for the resource check.
type soakClient struct {
	name string

	wmu  sync.Mutex
	ws   *websocket.Conn // nil: logged out
	msgs chan signaling.Message
	done chan struct{}

	mu        sync.Mutex
	peer      *rtctest.Peer
	pending   []webrtc.ICECandidateInit
	stopMedia chan struct{}
	mediaWG   sync.WaitGroup
}

// soakTB hands rtctest.NewPeer a testing.TB that keeps nothing for the
// test's cleanup (the soak closes each Peer itself) and panics instead of
// calling FailNow from a client goroutine.
type soakTB struct{ testing.TB }

func (soakTB) Cleanup(func())            {}
func (soakTB) Helper()                   {}
func (soakTB) Fatal(args ...any)         { panic(fmt.Sprint(args...)) }
func (soakTB) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }

func (c *soakClient) ensureLogin(url string) error {
	deadline := time.Now().Add(soakStep)
	for {
		err := c.login(url)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		// The name is still held: by a session in its grace period, or
		// one whose close the server has not processed yet.
		time.Sleep(200 * time.Millisecond)
	}
}

func (c *soakClient) login(url string) error {
	c.wmu.Lock()
	ws := c.ws
	c.wmu.Unlock()
	if ws != nil {
		return nil
	}
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		return fmt.Errorf("%s: dial: %w", c.name, err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(soakStep))
	if err := ws.WriteJSON(signaling.Message{Type: "login", Name: c.name}); err != nil {
		_ = ws.Close()
		return fmt.Errorf("%s: login: %w", c.name, err)
	}
	for {
		var m signaling.Message
		if err := ws.ReadJSON(&m); err != nil {
			_ = ws.Close()
			return fmt.Errorf("%s: login reply: %w", c.name, err)
		}
		if m.Type != "login" {
			continue
		}
		if m.Success == nil || !*m.Success {
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
			_ = ws.Close()
			return fmt.Errorf("%s: login refused: %s", c.name, m.Message)
		}
		break
	}
	_ = ws.SetReadDeadline(time.Time{})
	c.wmu.Lock()
	c.ws, c.msgs, c.done = ws, make(chan signaling.Message, 256), make(chan struct{})
	c.wmu.Unlock()
	go c.readLoop(ws, c.msgs, c.done)
	return nil
}

// closeWS ends the WebSocket: with a close frame, or by resetting the TCP
// connection (no close frame, no FIN). It waits for the reader to end.
func (c *soakClient) closeWS(closeFrame bool) {
	c.wmu.Lock()
	ws, done := c.ws, c.done
	c.ws = nil
	if ws != nil && closeFrame {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, ""), time.Now().Add(time.Second))
	}
	c.wmu.Unlock()
	if ws == nil {
		return
	}
	if tc, ok := ws.UnderlyingConn().(*net.TCPConn); ok && !closeFrame {
		_ = tc.SetLinger(0) // close sends RST
	}
	_ = ws.Close()
	<-done
}

func (c *soakClient) send(m signaling.Message) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.ws != nil {
		_ = c.ws.WriteJSON(m)
	}
}

func (c *soakClient) readLoop(ws *websocket.Conn, msgs chan signaling.Message, done chan struct{}) {
	defer close(done)
	defer close(msgs)
	for {
		var m signaling.Message
		if err := ws.ReadJSON(&m); err != nil {
			return
		}
		switch m.Type {
		case "users":
			continue
		case "candidate":
			c.addCandidate(*m.Candidate)
			continue
		case "answer":
			if err := c.setRemote(*m.Answer); err != nil {
				m = signaling.Message{Type: "error", Message: "client: " + err.Error()}
			}
		case "offer":
			if err := c.answer(m); err != nil {
				m = signaling.Message{Type: "error", Message: "client: " + err.Error()}
			}
		}
		select {
		case msgs <- m:
		default:
			// The test reads every message it waits for; 256 queued means
			// something is badly wrong, and a missing leave will show it.
		}
	}
}

func (c *soakClient) currentPeer() *rtctest.Peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.peer
}

func (c *soakClient) answer(m signaling.Message) error {
	pc := c.currentPeer()
	if pc == nil {
		return errors.New("offer without a peer")
	}
	if err := c.setRemote(*m.Offer); err != nil {
		return err
	}
	answer, err := pc.PC.CreateAnswer(nil)
	if err == nil {
		err = pc.PC.SetLocalDescription(answer)
	}
	if err != nil {
		return fmt.Errorf("answering: %w", err)
	}
	c.send(signaling.Message{Type: "answer", Name: m.Name, Answer: &answer})
	return nil
}

func (c *soakClient) setRemote(d webrtc.SessionDescription) error {
	p := c.currentPeer()
	if p == nil {
		return errors.New("description without a peer")
	}
	if err := p.PC.SetRemoteDescription(d); err != nil {
		return fmt.Errorf("remote %s: %w", d.Type, err)
	}
	c.mu.Lock()
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, cand := range pending {
		_ = p.PC.AddICECandidate(cand)
	}
	return nil
}

// addCandidate adds a remote candidate; errors (a candidate of a call that
// just ended, say) do not matter: ICE shows whether the call connects.
func (c *soakClient) addCandidate(cand webrtc.ICECandidateInit) {
	c.mu.Lock()
	p := c.peer
	if p == nil {
		c.mu.Unlock()
		return
	}
	if p.PC.RemoteDescription() == nil {
		c.pending = append(c.pending, cand)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	_ = p.PC.AddICECandidate(cand)
}

// newPeer gives c a fresh PeerConnection for the next call: host
// candidates on loopback only (every other interface would cost sockets
// and candidates, and other tests' namespaces come and go), no mDNS.
func (c *soakClient) newPeer(t *testing.T) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%s: new peer: %v", c.name, r)
		}
	}()
	p := rtctest.NewPeer(soakTB{t}, rtctest.Options{Configure: func(se *webrtc.SettingEngine) {
		se.SetInterfaceFilter(func(name string) bool { return name == "lo" })
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	}})
	p.PC.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand != nil {
			init := cand.ToJSON()
			c.send(signaling.Message{Type: "candidate", Candidate: &init})
		}
	})
	c.mu.Lock()
	c.peer, c.pending = p, nil
	c.mu.Unlock()
	return nil
}

func (c *soakClient) call(name string) error {
	pc := c.currentPeer().PC
	offer, err := pc.CreateOffer(nil)
	if err == nil {
		err = pc.SetLocalDescription(offer)
	}
	if err != nil {
		return fmt.Errorf("%s: offer: %w", c.name, err)
	}
	c.send(signaling.Message{Type: "offer", Name: name, Offer: &offer})
	return nil
}

// startMedia sends audio and video at 10 packets/s each, with rtctest's
// payloads (so corruption shows), until closePeer.
func (c *soakClient) startMedia() {
	c.mu.Lock()
	p := c.peer
	stop := make(chan struct{})
	c.stopMedia = stop
	c.mu.Unlock()
	c.mediaWG.Add(1)
	go func() {
		defer c.mediaWG.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for n := uint32(0); ; n++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for _, tr := range []struct {
				track *webrtc.TrackLocalStaticRTP
				kind  webrtc.RTPCodecType
				rate  uint32
			}{{p.Audio, webrtc.RTPCodecTypeAudio, 4800}, {p.Video, webrtc.RTPCodecTypeVideo, 9000}} {
				pkt := &rtp.Packet{Header: rtp.Header{Version: 2, Marker: true, SequenceNumber: uint16(n), Timestamp: n * tr.rate},
					Payload: rtctest.Payload(tr.kind, n)}
				_ = tr.track.WriteRTP(pkt)
			}
		}
	}()
}

type portUse struct {
	name   string
	closed time.Time
}

var portsUsed sync.Map // local UDP port -> portUse: the PC that used it last

// localPorts returns the ports of p's local candidates (from its local
// description: GetStats races with pion closing the PeerConnection itself).
func localPorts(p *rtctest.Peer) []int {
	var ports []int
	d := p.PC.LocalDescription()
	if d == nil {
		return nil
	}
	for _, line := range strings.Split(d.SDP, "\n") {
		if f := strings.Fields(line); len(f) > 5 && strings.HasPrefix(f[0], "a=candidate:") {
			if port, err := strconv.Atoi(f[5]); err == nil && !slices.Contains(ports, port) {
				ports = append(ports, port)
			}
		}
	}
	return ports
}

// closePeer stops the media and closes the PeerConnection; idempotent.
func (c *soakClient) closePeer() {
	c.mu.Lock()
	p, stop := c.peer, c.stopMedia
	c.peer, c.stopMedia, c.pending = nil, nil, nil
	c.mu.Unlock()
	if stop != nil {
		close(stop)
	}
	c.mediaWG.Wait()
	if p != nil {
		ports := localPorts(p)
		p.Close()
		for _, port := range ports {
			portsUsed.Store(port, portUse{c.name, time.Now()})
		}
	}
}

// drain discards what arrived between calls.
func (c *soakClient) drain() {
	for {
		select {
		case _, ok := <-c.msgs:
			if !ok {
				return
			}
		default:
			return
		}
	}
}

// expect waits for a message of type typ, skipping the informational ones;
// an error or an unexpected leave is returned as an error.
func (c *soakClient) expect(typ string, d time.Duration) (signaling.Message, error) {
	c.wmu.Lock()
	msgs := c.msgs
	c.wmu.Unlock()
	timeout := time.NewTimer(d)
	defer timeout.Stop()
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return m, fmt.Errorf("%s: connection closed waiting for %s", c.name, typ)
			}
			if m.Type == typ {
				return m, nil
			}
			if m.Type == "error" || m.Type == "leave" {
				return m, fmt.Errorf("%s: got %+v waiting for %s", c.name, m, typ)
			}
		case <-timeout.C:
			return signaling.Message{}, fmt.Errorf("%s: no %s within %v", c.name, typ, d)
		}
	}
}
