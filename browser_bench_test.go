package main

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"videochat/internal/browsertest"
	"videochat/internal/netns"
)

// BenchmarkFirstRemoteFrame measures, in one run, the time from pressing
// Call to the caller's first decoded remote video frame: through the SFU
// (two tabs of the real app, the callee accepting at once) and, as the
// yardstick, a direct peer-to-peer call between two tabs of the same browser.
//
//	go test -run XXX -bench FirstRemoteFrame -benchtime 10x .
func BenchmarkFirstRemoteFrame(b *testing.B) {
	browser := browsertest.Launch(b)
	b.Run("p2p", func(b *testing.B) {
		srv := httptest.NewServer(http.FileServer(http.Dir("testdata")))
		defer srv.Close()
		caller := browser.Open(b, srv.URL+"/p2p.html?role=caller")
		callee := browser.Open(b, srv.URL+"/p2p.html?role=callee")
		for _, tab := range []*browsertest.Tab{caller, callee} {
			tab.Eval(`window.previewReady`, new(bool))
		}
		var total float64
		for i := 0; i < b.N; i++ {
			caller.Eval(`window.call()`, new(bool))
			caller.WaitFor(`window.marks.first !== undefined`, 10*time.Second)
			var ms float64
			caller.Eval(`window.marks.first - window.marks.click`, &ms)
			total += ms
		}
		b.ReportMetric(total/float64(b.N), "ms/first-frame")
	})
	b.Run("sfu", func(b *testing.B) {
		app := startApp(b, nil)
		sfuFirstFrames(b, browser, app.URL())
	})
	// Both tabs behind a firewall dropping 5 % of UDP each way, so every
	// hop (caller↔server, server↔callee) loses 5 %.
	b.Run("sfu-loss5", func(b *testing.B) {
		ns := netns.New(b)
		ns.UDPLoss(5)
		_, lossy, url := nsBrowser(b, ns, nil)
		sfuFirstFrames(b, lossy, url)
	})
}

// sfuFirstFrames makes b.N calls between two tabs of the app at url and
// reports the mean and median time from pressing Call to the caller's
// first remote frame.
func sfuFirstFrames(b *testing.B, browser *browsertest.Browser, url string) {
	caller := signIn(b, browser, url, "alice")
	callee := signIn(b, browser, url, "bob")
	caller.WaitFor(`document.querySelector('#users [data-name="bob"]')`, 10*time.Second)
	times := make([]float64, 0, b.N)
	for i := 0; i < b.N; i++ {
		autoAccept(callee)
		caller.Eval(`(() => { document.querySelector('#users [data-name="bob"]').click(); return true; })()`, new(bool))
		caller.WaitFor(`window.app.marks.firstRemoteFrame !== undefined`, 10*time.Second)
		var ms float64
		caller.Eval(`window.app.marks.firstRemoteFrame - window.app.marks.callClicked`, &ms)
		times = append(times, ms)
		caller.Eval(`(() => { document.getElementById('hangup-btn').click(); return true; })()`, new(bool))
		for _, tab := range []*browsertest.Tab{caller, callee} {
			tab.WaitFor(`window.app.state === 'idle'`, 10*time.Second)
		}
	}
	var total float64
	for _, ms := range times {
		total += ms
	}
	slices.Sort(times)
	b.ReportMetric(total/float64(len(times)), "ms/first-frame")
	b.ReportMetric(times[len(times)/2], "ms-p50")
	b.ReportMetric(times[len(times)-1], "ms-max")
}
