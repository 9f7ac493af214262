package sfu

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
)

// A participant's media connection, as the call sees it:
//
//	new ──remote description──► connecting ──connected──► up
//	up ──disconnected/failed──► interrupted (Interrupted; grace timer)
//	up ──connecting (an ICE restart)──► restarting (grace timer; Interrupted
//	      only if it lasts longer than the ICE disconnected timeout)
//	interrupted/restarting ──connected──► up (Restored if Interrupted was sent)
//	interrupted/restarting ──grace over──► done (Failed)
//	connecting ──ConnectTimeout over──► done (Failed)
//	any ──DTLS failed, or PeerConnection closed by pion──► done (Failed)
//
// pion's own "failed" ICE state is not the end: an ICE agent in failed state
// is revived by a remote offer with new credentials (ice.Agent.Restart
// clears it back to checking), so only the grace timer ends the call.

// afterFunc runs f after d unless the returned stop is called first; it is
// time.AfterFunc by default and a fake clock in tests.
type afterFunc func(d time.Duration, f func()) (stop func() bool)

func realAfterFunc(d time.Duration, f func()) func() bool { return time.AfterFunc(d, f).Stop }

// Errors passed to Signaler.Failed.
var (
	ErrConnectTimeout = errors.New("sfu: media connection not established in time")
	ErrICELost        = errors.New("sfu: media connection lost and not restored in time")
	ErrDTLSFailed     = errors.New("sfu: DTLS handshake failed")
	ErrPCClosed       = errors.New("sfu: peer connection closed")
)

// timer is one pending deadline; its identity tells a timer that fired
// after being stopped or replaced from the current one.
type timer struct {
	stop func() bool
}

// ConnectObserver may be implemented by a Signaler: Connected is called
// once, when the participant's media connection first comes up, with the
// time since its first remote description was applied (ICE and DTLS, as
// the participant waited for them).
type ConnectObserver interface {
	Connected(setup time.Duration)
}

type lifecycle struct {
	sig            Signaler
	after          afterFunc
	grace          time.Duration // Config.ICEFailedTimeout
	connectTimeout time.Duration // Config.ConnectTimeout
	interruptAfter time.Duration // a restart lasting this long counts as an interruption

	mu            sync.Mutex
	remoteAt      time.Time // the first remote description was applied
	everConnected bool
	dtlsFailed    bool // sticky: pion may close the PeerConnection right after
	interrupted   bool // Interrupted sent, Restored not yet
	done          bool // Failed sent or closed: no more calls out
	connectT      *timer
	graceT        *timer
	interruptT    *timer

	// notifyMu orders calls out (Interrupted, Restored, Failed) as the
	// decisions were made under mu, without holding mu during them.
	notifyMu sync.Mutex
}

func newLifecycle(sig Signaler, cfg Config) *lifecycle {
	after := cfg.afterFunc
	if after == nil {
		after = realAfterFunc
	}
	return &lifecycle{sig: sig, after: after, grace: cfg.ICEFailedTimeout,
		connectTimeout: cfg.ConnectTimeout, interruptAfter: iceDisconnectedTimeout(cfg)}
}

// startLocked arms f after d unless *slot is armed already.
func (l *lifecycle) startLocked(slot **timer, d time.Duration, f func()) {
	if *slot != nil || d <= 0 {
		return
	}
	t := &timer{}
	*slot = t
	t.stop = l.after(d, func() {
		l.mu.Lock()
		if l.done || *slot != t {
			l.mu.Unlock()
			return
		}
		*slot = nil
		f() // called with mu held; it may unlock (via callOut)
	})
}

func stopLocked(slot **timer) {
	if *slot != nil {
		(*slot).stop()
		*slot = nil
	}
}

// callOut runs f after releasing mu, ordered with every other call out.
func (l *lifecycle) callOut(f func()) {
	l.notifyMu.Lock()
	l.mu.Unlock()
	defer l.notifyMu.Unlock()
	f()
}

// failLocked ends the lifecycle and reports err; it releases mu.
func (l *lifecycle) failLocked(err error) {
	l.done = true
	stopLocked(&l.connectT)
	stopLocked(&l.graceT)
	stopLocked(&l.interruptT)
	l.callOut(func() { l.sig.Failed(err) })
}

// remoteSet starts the connect deadline when the first remote description
// is applied (a callee's PeerConnection may wait unconnected while the
// phone rings; that does not count).
func (l *lifecycle) remoteSet() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.done || l.everConnected {
		return
	}
	if l.remoteAt.IsZero() {
		l.remoteAt = time.Now()
	}
	l.startLocked(&l.connectT, l.connectTimeout, func() {
		l.failLocked(fmt.Errorf("%w: %v after the remote description", ErrConnectTimeout, l.connectTimeout))
	})
}

// update applies the PeerConnection's current state. pion reports state
// changes from separate goroutines, possibly out of order, so the caller
// passes the state as it is now, not the one that triggered the call.
func (l *lifecycle) update(s webrtc.PeerConnectionState, dtlsFailed bool) {
	l.mu.Lock()
	if l.done {
		l.mu.Unlock()
		return
	}
	if dtlsFailed || l.dtlsFailed {
		l.failLocked(ErrDTLSFailed) // permanent: an ICE restart keeps the DTLS session
		return
	}
	switch s {
	case webrtc.PeerConnectionStateConnected:
		first := !l.everConnected
		l.everConnected = true
		stopLocked(&l.connectT)
		stopLocked(&l.graceT)
		stopLocked(&l.interruptT)
		if l.interrupted {
			l.interrupted = false
			l.callOut(l.sig.Restored)
			return
		}
		if obs, ok := l.sig.(ConnectObserver); ok && first && !l.remoteAt.IsZero() {
			setup := time.Since(l.remoteAt)
			l.callOut(func() { obs.Connected(setup) })
			return
		}
	case webrtc.PeerConnectionStateDisconnected, webrtc.PeerConnectionStateFailed:
		if !l.everConnected {
			break // the connect deadline decides; the client may still restart
		}
		l.startGraceLocked()
		stopLocked(&l.interruptT)
		if !l.interrupted {
			l.interrupted = true
			l.callOut(l.sig.Interrupted)
			return
		}
	case webrtc.PeerConnectionStateConnecting:
		if !l.everConnected {
			break
		}
		// An ICE restart is under way: media pauses until it completes.
		// The same grace applies; the other side hears of it only if it
		// takes as long as a lost connection would take to notice.
		l.startGraceLocked()
		if !l.interrupted {
			l.startLocked(&l.interruptT, l.interruptAfter, func() {
				l.interrupted = true
				l.callOut(l.sig.Interrupted)
			})
		}
	case webrtc.PeerConnectionStateClosed:
		// Closed by pion, not by us (close sets done first): the client
		// sent a DTLS close_notify, or a failed DTLS handshake closed its
		// connection (pion may report that close before the failure).
		if !l.everConnected {
			l.failLocked(fmt.Errorf("%w before it ever connected (DTLS handshake failed, or the client closed it)", ErrPCClosed))
			return
		}
		l.failLocked(ErrPCClosed)
		return
	}
	l.mu.Unlock()
}

// markDTLSFailed records that the DTLS handshake failed; the next update
// reports it. pion calls it under its DTLS transport's lock: it only records.
func (l *lifecycle) markDTLSFailed() {
	l.mu.Lock()
	l.dtlsFailed = true
	l.mu.Unlock()
}

func (l *lifecycle) startGraceLocked() {
	l.startLocked(&l.graceT, l.grace, func() {
		l.failLocked(fmt.Errorf("%w (grace %v)", ErrICELost, l.grace))
	})
}

// close stops every timer; nothing is decided after it returns.
func (l *lifecycle) close() {
	l.mu.Lock()
	l.done = true
	stopLocked(&l.connectT)
	stopLocked(&l.graceT)
	stopLocked(&l.interruptT)
	l.mu.Unlock()
	// A call out already under way is not waited for: the Signaler may
	// close the participant from inside Failed.
}

// iceDisconnectedTimeout is how long pion's ICE agent waits without hearing
// from the client before it reports disconnected.
func iceDisconnectedTimeout(cfg Config) time.Duration {
	if cfg.ICEDisconnectedTimeout > 0 {
		return cfg.ICEDisconnectedTimeout
	}
	return min(5*time.Second, cfg.ICEFailedTimeout/3)
}
