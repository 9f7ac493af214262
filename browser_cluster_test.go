package main

import (
	"testing"
	"time"

	"videochat/internal/browsertest"
	"videochat/internal/redistest"
)

// TestBrowserClusterCall: two tabs of the real app, each signed in on a
// different node of a cluster, complete a call (frames decoded both ways;
// the call is hosted on the caller's node) and hang up from the remote side.
func TestBrowserClusterCall(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, rs.URL(), 2)
	b := browsertest.Launch(t)
	caller, callee := browserCallAs(t, b, nodes[0].URL(), nodes[1].URL())
	if n := len(nodes[1].sfu.Stats()); n != 0 {
		t.Errorf("the callee's node hosts %d calls; media must stay on the caller's node", n)
	}
	sc, se := stats(caller), stats(callee)
	t.Logf("call to first remote frame: caller %.0f ms, callee %.0f ms (from pressing Call)",
		sc.FirstRemoteFrm-sc.CallClicked, se.TimeOrigin+se.FirstRemoteFrm-(sc.TimeOrigin+sc.CallClicked))
	// The remote participant hangs up; both return to idle.
	callee.Eval(`(() => { document.getElementById('hangup-btn').click(); return true; })()`, new(bool))
	for _, tab := range []*browsertest.Tab{caller, callee} {
		tab.WaitFor(`window.app.state === 'idle' && window.app.pc === null`, 10*time.Second)
	}
	if r := stats(caller).LastEndReason; r != "hangup" {
		t.Errorf("caller's end reason %q, want hangup", r)
	}
}
