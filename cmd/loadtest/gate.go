package main

import (
	"context"
	"sync"
)

// setupGate holds every call's media until all calls of a batch are
// through their handshakes (connected, or given up), so that a batch of
// parallel set-ups is measured without the first calls' media competing
// with the later calls' handshakes. A nil gate holds nothing.
//
// Why it matters under -race (TestParallelSetup): with clients and server
// in one race-instrumented process on 2 cores, 30 calls' media (about
// 10,500 packets/s into the server) saturate the CPU; the SFU's media
// socket then overflows and the kernel drops about 3 of 4 datagrams
// (/proc/net/udp drops: 288,000 against ~100,000 delivered in one 16 s
// run), DTLS flights included. pion's DTLS retransmits with a doubling
// interval (dtls/v3 handshaker.go:338), so a 10 s handshake gets only 7
// tries, and at that loss about 1 in 8 legs never hears the final flight.
type setupGate struct {
	mu   sync.Mutex
	left int
	open chan struct{}
}

func newSetupGate(n int) *setupGate {
	g := &setupGate{left: n, open: make(chan struct{})}
	if n <= 0 {
		close(g.open)
	}
	return g
}

// arrive counts one call through its handshakes; each call arrives once.
func (g *setupGate) arrive() {
	if g == nil {
		return
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.left > 0 {
		g.left--
		if g.left == 0 {
			close(g.open)
		}
	}
}

// wait returns when every call has arrived or ctx ends.
func (g *setupGate) wait(ctx context.Context) error {
	if g == nil {
		return nil
	}
	select {
	case <-g.open:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
