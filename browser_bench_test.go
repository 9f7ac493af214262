package main

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"videochat/internal/browsertest"
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
		caller := signIn(b, browser, app.URL(), "alice")
		callee := signIn(b, browser, app.URL(), "bob")
		caller.WaitFor(`document.querySelector('#users [data-name="bob"]')`, 10*time.Second)
		var total float64
		for i := 0; i < b.N; i++ {
			autoAccept(callee)
			caller.Eval(`(() => { document.querySelector('#users [data-name="bob"]').click(); return true; })()`, new(bool))
			caller.WaitFor(`window.app.marks.firstRemoteFrame !== undefined`, 10*time.Second)
			var ms float64
			caller.Eval(`window.app.marks.firstRemoteFrame - window.app.marks.callClicked`, &ms)
			total += ms
			caller.Eval(`(() => { document.getElementById('hangup-btn').click(); return true; })()`, new(bool))
			for _, tab := range []*browsertest.Tab{caller, callee} {
				tab.WaitFor(`window.app.state === 'idle'`, 10*time.Second)
			}
		}
		b.ReportMetric(total/float64(b.N), "ms/first-frame")
	})
}
