package main

import (
	"testing"
	"time"

	"videochat/internal/browsertest"
	"videochat/internal/netns"
)

// publisherBitrate samples, at the server, the bit rate of the video that
// name publishes, over the last window.
func publisherBitrate(app *App, name string, window time.Duration) float64 {
	bytes := func() uint64 {
		for _, call := range app.sfu.Stats() {
			for _, p := range call {
				for _, u := range p.Up {
					if p.Name == name && u.Kind == "video" {
						return u.Bytes
					}
				}
			}
		}
		return 0
	}
	b0 := bytes()
	time.Sleep(window)
	return float64(bytes()-b0) * 8 / window.Seconds()
}

// retransmittedTo returns how many video packets the sfu resent to name,
// and how many NACKed ones it held back (too soon, over the rate).
func retransmittedTo(app *App, name string) (rtx, soon, over uint64) {
	for _, c := range app.sfu.Stats() {
		for _, p := range c {
			if p.Name != name {
				continue
			}
			for _, d := range p.Down {
				if d.Kind == "video" {
					rtx += d.Retransmitted
				}
			}
			soon, over = p.ResendsTooSoon, p.ResendsOverRate
		}
	}
	return rtx, soon, over
}

// TestBrowserBitrateFollowsSlowReceiver caps the callee's downlink at
// 300 kbit/s while the caller's link is free: the server must slow the
// caller down to what the callee can take (REMB from the callee's estimate),
// and let it speed up again once the cap is lifted.
func TestBrowserBitrateFollowsSlowReceiver(t *testing.T) {
	ns := netns.New(t)
	app, slowBrowser, slowURL := nsBrowser(t, ns, nil)
	fastBrowser := browsertest.Launch(t)

	caller := signIn(t, fastBrowser, app.URL(), "alice")
	callee := signIn(t, slowBrowser, slowURL, "bob")
	caller.WaitFor(`document.querySelector('#users [data-name="bob"]')`, 10*time.Second)
	autoAccept(callee)
	caller.Eval(`(() => { document.querySelector('#users [data-name="bob"]').click(); return true; })()`, new(bool))
	waitDecoding(t, callee, 30)

	// Let the caller ramp up on the free link.
	var before float64
	for i := 0; i < 15 && before < 450_000; i++ {
		before = publisherBitrate(app, "alice", time.Second)
		if i >= 5 { // slow to ramp up: say why
			logBWE(t, app, before)
		}
	}
	if before < 400_000 {
		t.Fatalf("the caller never exceeded 400 kbit/s (%.0f), nothing to adapt", before)
	}
	// Its steady rate, over 3 s: one-second samples of the fake camera's
	// video swing by ±10 %, and recovery is measured against this.
	peak := before
	before = publisherBitrate(app, "alice", 3*time.Second)
	t.Logf("before the cap: caller sends %.0f kbit/s (peak 1 s sample %.0f)", before/1000, peak/1000)

	const limit = 300_000
	rtx0, _, _ := retransmittedTo(app, "bob")
	ns.LimitDownlink("300kbit")
	capped := time.Now()
	var rate float64
	for rate = before; rate > limit; rate = publisherBitrate(app, "alice", time.Second) {
		if time.Since(capped) > 12*time.Second {
			t.Fatalf("caller still sends %.0f kbit/s %v after the callee's link was capped at 300 kbit/s", rate/1000, time.Since(capped))
		}
	}
	fell := time.Since(capped)
	t.Logf("cap applied: caller down to %.0f kbit/s after %v", rate/1000, fell.Round(100*time.Millisecond))
	if fell > 10*time.Second+time.Second { // one sampling window of slack
		t.Errorf("adaptation took %v, want within 10 s", fell)
	}
	// Audio is not starved by video: under the cap the callee still gets
	// (nearly) all of the caller's 50 Opus packets a second.
	// And the caller stays within the cap while it lasts, probes and all.
	const audioWindow = 3 * time.Second
	a0 := stats(callee).AudioPackets
	capped3s := publisherBitrate(app, "alice", audioWindow)
	audio := stats(callee).AudioPackets - a0
	t.Logf("under the cap the callee received %d audio packets in %v; the caller sent %.0f kbit/s of video", audio, audioWindow, capped3s/1000)
	if want := int(audioWindow.Seconds()*50) * 9 / 10; audio < want {
		t.Errorf("callee received %d audio packets in %v under the cap, want at least %d", audio, audioWindow, want)
	}
	if capped3s > limit {
		t.Errorf("under the 300 kbit/s cap the caller sent %.0f kbit/s of video", capped3s/1000)
	}
	// Nor by retransmissions: the packets the cap drops are NACKed every
	// round trip, and resending each at every NACK would fill the link
	// with them (measured without the limit: 220-450 resends a second).
	// Resends are held to one per round trip and to half the estimated
	// rate (sfu/resendlimit.go).
	rtx, soon, over := retransmittedTo(app, "bob")
	t.Logf("under the cap the sfu resent %d packets to the callee; held back %d (too soon) and %d (over its rate)", rtx-rtx0, soon, over)
	if d := time.Since(capped); rtx-rtx0 > uint64(100*d.Seconds()) {
		t.Errorf("the sfu resent %d packets to the capped callee in %v", rtx-rtx0, d.Round(time.Second))
	}

	// Free again: back to three quarters of the earlier rate (the fake
	// camera's content needs about 450-500 kbit/s), well above the cap,
	// within 10 s. Without probing the estimate could stay pinned at the
	// floor for good (the publisher sends only what the estimate allows).
	ns.Unlimit()
	lifted := time.Now()
	for rate < 0.75*before {
		if time.Since(lifted) > 10*time.Second {
			t.Fatalf("caller still sends %.0f kbit/s %v after the cap was lifted", rate/1000, time.Since(lifted))
		}
		rate = publisherBitrate(app, "alice", time.Second)
		logBWE(t, app, rate)
	}
	// The time includes the last 1 s sampling window.
	t.Logf("cap lifted: caller back up to %.0f kbit/s after %v (BWE recovery)", rate/1000, time.Since(lifted).Round(100*time.Millisecond))
	waitDecoding(t, callee, stats(callee).FramesDecoded+20)
}

func logBWE(t *testing.T, app *App, rate float64) {
	for _, call := range app.sfu.Stats() {
		for _, p := range call {
			for _, u := range p.Up {
				if p.Name == "alice" && u.Kind == "video" {
					t.Logf("alice sends %.0f kbit/s, REMB to alice %d", rate/1000, u.REMB/1000)
				}
			}
			if p.Name == "bob" {
				t.Logf("bob's downlink estimate %d kbit/s (probes %d, raised %d)", p.EstimatedBitrate/1000, p.ProbeClusters, p.ProbeRaises)
			}
		}
	}
}
