package signaling

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
)

// A session is one login. It outlives its WebSocket: a connection attaches
// to it, and a connection lost without a close frame leaves it detached for
// a grace period, during which frames for it are queued and a new
// connection may take it back with its token (PROTOCOL.md, Session resume).
//
//	attached --drop (no close frame)----------------> detached
//	detached --resume (new connection)--------------> attached (queue delivered)
//	attached --resume (old connection still open)---> attached (old one closed)
//	detached --grace over / queue overflow----------> ended
//	attached, detached --close frame, shutdown------> ended
//
// Everything else leaves the state as it is. The transition function below
// is the whole machine; the methods apply it under the session's lock and
// report what the server has to do (tell the other participant, end the
// call, free the name).
type sessionState int

const (
	stateAttached sessionState = iota
	stateDetached
	stateEnded
)

func (st sessionState) String() string {
	switch st {
	case stateAttached:
		return "attached"
	case stateDetached:
		return "detached"
	}
	return "ended"
}

type sessionEvent int

const (
	evDrop   sessionEvent = iota // the connection was lost without a close frame
	evResume                     // a connection presented the session's token
	evExpire                     // the grace period ended, or the queue overflowed
	evEnd                        // close frame, dropped slow client, shutdown
)

// transition returns the state after ev, and false when ev does nothing in
// state from.
func transition(from sessionState, ev sessionEvent) (sessionState, bool) {
	switch {
	case from == stateEnded:
		return stateEnded, false
	case ev == evEnd:
		return stateEnded, true
	case ev == evResume:
		return stateAttached, true
	case ev == evDrop && from == stateAttached:
		return stateDetached, true
	case ev == evExpire && from == stateDetached:
		return stateEnded, true
	}
	return from, false
}

// stopper is a timer that can be stopped (*time.Timer).
type stopper interface{ Stop() bool }

// sessionClock is what sessions share: the grace period, the queue bound
// and the timer function (injectable for tests).
type sessionClock struct {
	grace    time.Duration
	maxQueue int
	after    func(time.Duration, func()) stopper
	// expire is run by the grace timer of the detachment numbered epoch;
	// it must not block (it hands the work to a goroutine).
	expire func(ss *session, epoch uint64)
	// count is the server's counters (sessions count the frames they send).
	count *counters
}

func realAfter(d time.Duration, f func()) stopper { return time.AfterFunc(d, f) }

type session struct {
	name  string // immutable
	clock *sessionClock

	mu       sync.Mutex
	state    sessionState
	conn     *client  // the attached connection (stateAttached)
	queue    [][]byte // frames for the user while detached, in order
	usersAt  int      // index in queue of the users list queued last, or -1
	overflow bool     // the queue overflowed: the session is ending
	timer    stopper  // grace timer (stateDetached)
	epoch    uint64   // counts detachments, so a stale timer does nothing
	// relay, on a proxy of a user of another node (relay.go), receives
	// every frame instead of a connection.
	relay *relayTarget
	// remote, while attached, is the user's connection on another node
	// (a resume that reached another node, roam.go): frames go there.
	remote *remoteConn
	// away (immutable) marks a stand-in session on the node holding a
	// resumed connection whose session lives on another node (roam.go).
	away *awayLink

	// Guarded by Server.mu.
	token string
	call  *call
	early []webrtc.ICECandidateInit // candidates sent before the call exists
	// earlyDropped counts candidates refused because early was full
	// (the client is told once).
	earlyDropped int
}

func newSession(name string, c *client, clock *sessionClock) *session {
	return &session{name: name, clock: clock, state: stateAttached, conn: c, usersAt: -1}
}

// newToken returns an opaque session token of 192 random bits.
func newToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// enqueue sends a frame to the user without blocking: to the attached
// connection, or into the queue while detached. A full queue ends the
// session (at once, through the grace timer's path).
func (ss *session) enqueue(frame []byte) { ss.push(frame, false) }

// enqueueUsers is enqueue for a users list: while detached, only the
// latest list is kept (it replaces the one queued before), so that a busy
// server's presence changes do not fill the queue.
func (ss *session) enqueueUsers(frame []byte) { ss.push(frame, true) }

func (ss *session) push(frame []byte, users bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.relay != nil {
		if !users {
			ss.relay.send(ss, frame)
		}
		return
	}
	switch ss.state {
	case stateAttached:
		if ss.remote != nil {
			if !users { // the connection's node sends its own lists
				ss.remote.send(frame)
			}
			return
		}
		if users {
			ss.conn.setUsers(frame) // replaces a list not yet written
		} else {
			ss.conn.enqueue(frame)
		}
	case stateDetached:
		if users && ss.usersAt >= 0 {
			ss.queue = append(ss.queue[:ss.usersAt], ss.queue[ss.usersAt+1:]...)
		}
		switch {
		case ss.overflow:
		case len(ss.queue) >= ss.clock.maxQueue:
			ss.overflow, ss.queue, ss.usersAt = true, nil, -1
			ss.startTimer(0)
		default:
			ss.queue = append(ss.queue, frame)
			if users {
				ss.usersAt = len(ss.queue) - 1
			}
		}
	}
}

func (ss *session) sendMsg(m *Message) {
	frame, err := json.Marshal(m)
	if err != nil {
		return
	}
	ss.clock.count.msgOut(m.Type)
	ss.enqueue(frame)
}

func (ss *session) sendError(text string) { ss.sendMsg(&Message{Type: typeError, Message: text}) }

// startTimer (re)starts the grace timer of the current detachment; ss.mu held.
func (ss *session) startTimer(d time.Duration) {
	if ss.timer != nil {
		ss.timer.Stop()
	}
	epoch := ss.epoch
	ss.timer = ss.clock.after(d, func() { ss.clock.expire(ss, epoch) })
}

func (ss *session) stopTimer() {
	if ss.timer != nil {
		ss.timer.Stop()
		ss.timer = nil
	}
}

// detach reports whether c's loss detached the session (false: c is not
// its connection, or it is not attached).
func (ss *session) detach(c *client) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.conn != c || !ss.dropLocked() {
		return false
	}
	ss.conn = nil
	return true
}

// detachRemote is detach for a connection on another node, named by its
// id there.
func (ss *session) detachRemote(conn string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.remote == nil || ss.remote.conn != conn || !ss.dropLocked() {
		return false
	}
	ss.remote = nil
	return true
}

// dropLocked moves the session to detached, if its state allows, and
// starts the grace timer. ss.mu is held.
func (ss *session) dropLocked() bool {
	next, ok := transition(ss.state, evDrop)
	if !ok {
		return false
	}
	ss.state, ss.queue, ss.overflow, ss.usersAt = next, nil, false, -1
	ss.epoch++
	ss.startTimer(ss.clock.grace)
	return true
}

// attachRemote makes the connection rc on another node the session's
// connection, like attach: rc gets reply, then what was queued. It returns
// what it replaced.
func (ss *session) attachRemote(rc *remoteConn, reply []byte) (old *client, oldRemote *remoteConn, ok bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	next, ok := transition(ss.state, evResume)
	if !ok || ss.overflow {
		return nil, nil, false
	}
	old, oldRemote = ss.conn, ss.remote
	ss.stopTimer()
	ss.epoch++
	rc.sendResumed(reply)
	for _, f := range ss.queue {
		rc.send(f)
	}
	ss.state, ss.conn, ss.remote, ss.queue, ss.usersAt = next, nil, rc, nil, -1
	return old, oldRemote, true
}

// remoteIs reports whether conn is the session's current remote connection.
func (ss *session) remoteIs(conn string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.remote != nil && ss.remote.conn == conn && ss.state == stateAttached
}

// takeRemote clears and returns the remote connection (the session ended).
func (ss *session) takeRemote() *remoteConn {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	rc := ss.remote
	ss.remote = nil
	return rc
}

// attach makes c the session's connection: c gets reply, then what was
// queued, before anything sent later. It returns the connection it
// replaced, if one was still attached, and false if the session has ended.
func (ss *session) attach(c *client, reply []byte) (old *client, ok bool) {
	old, _, ok = ss.attachLocal(c, reply)
	return old, ok
}

// attachLocal is attach that also returns the connection on another node
// it replaced, if any.
func (ss *session) attachLocal(c *client, reply []byte) (old *client, oldRemote *remoteConn, ok bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	next, ok := transition(ss.state, evResume)
	if !ok || ss.overflow {
		return nil, nil, false
	}
	old, oldRemote = ss.conn, ss.remote
	ss.stopTimer()
	ss.epoch++
	c.enqueueBatch(append([][]byte{reply}, ss.queue...))
	ss.state, ss.conn, ss.remote, ss.queue = next, c, nil, nil
	return old, oldRemote, true
}

// expired reports whether the grace timer of detachment epoch ends the
// session now.
func (ss *session) expired(epoch uint64) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.epoch != epoch {
		return false
	}
	next, ok := transition(ss.state, evExpire)
	if !ok {
		return false
	}
	ss.state, ss.queue, ss.timer = next, nil, nil
	return true
}

// end ends the session: if c is not nil, only while c is its attached
// connection. It reports whether this call ended it.
func (ss *session) end(c *client) bool { return ss.endIf(c, "") }

// endIf is end; with conn set, only while conn (on another node) is its
// attached connection.
func (ss *session) endIf(c *client, conn string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if c != nil && (ss.state != stateAttached || ss.conn != c) {
		return false
	}
	if conn != "" && (ss.state != stateAttached || ss.remote == nil || ss.remote.conn != conn) {
		return false
	}
	next, ok := transition(ss.state, evEnd)
	if !ok {
		return false
	}
	ss.stopTimer()
	ss.state, ss.conn, ss.queue = next, nil, nil
	ss.epoch++
	return true
}

func (ss *session) current() sessionState {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.state
}
