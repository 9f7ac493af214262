package sfu

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/pion/webrtc/v4"
)

// Signaler is how the SFU talks to one participant's client. Every method
// must return without blocking (queue and return).
type Signaler interface {
	// SendDescription delivers the server's offer or answer.
	SendDescription(webrtc.SessionDescription)
	// SendCandidate delivers one of the server's ICE candidates. It is only
	// called after the description it belongs to has been sent.
	SendCandidate(webrtc.ICECandidateInit)
	// Interrupted reports that the participant's media connection (ICE)
	// was lost; the call is held for the grace period (Config.ICEFailedTimeout)
	// while the client restarts ICE.
	Interrupted()
	// Restored reports that the media connection is back after Interrupted.
	Restored()
	// Failed reports that the participant's connection failed for good.
	Failed(err error)
}

// Call is a set of participants whose media is forwarded to each other.
//
// Subscriptions (which upTrack feeds which downTrack) change only under
// subMu, together with the membership check they depend on: Join, publish
// and remove are serialised, so a leaving participant is never
// re-subscribed and no downTrack is subscribed twice. subMu is taken before
// mu and guards no data of its own; the only work done under it is the
// sink-list updates (and the throttled keyframe request each new
// subscription makes, which never blocks).
type Call struct {
	sfu   *SFU
	id    string
	log   *slog.Logger // with the call's id
	probe bool         // the self-test's throwaway call (Probe), left out of Load; immutable

	subMu sync.Mutex

	mu        sync.Mutex
	parts     []*Participant
	closed    bool
	recording bool // StartRecording was called (consent.go)
}

// NewCall creates an empty call. id names it in logs and recordings. After
// the SFU is closed, the call is created closed (Join fails).
func (s *SFU) NewCall(id string) *Call { return s.newCall(id, false) }

func (s *SFU) newCall(id string, probe bool) *Call {
	c := &Call{sfu: s, id: id, log: s.log.With("call", id), probe: probe}
	s.mu.Lock()
	if s.closed {
		c.closed = true
	} else {
		s.calls[c] = struct{}{}
	}
	s.mu.Unlock()
	return c
}

// ID returns the call's id.
func (c *Call) ID() string { return c.id }

// Join adds a participant with its own PeerConnection. Its outgoing audio
// and video tracks exist from the start, so the first negotiation already
// carries the other participants' media.
func (c *Call) Join(name string, sig Signaler) (*Participant, error) {
	p, err := newParticipant(c, name, sig)
	if err != nil {
		return nil, err
	}
	c.subMu.Lock()
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		c.subMu.Unlock()
		p.closePC()
		return nil, ErrClosed
	}
	others := append([]*Participant(nil), c.parts...)
	c.parts = append(c.parts, p)
	c.mu.Unlock()
	var fresh []*downTrack
	for _, o := range others {
		for _, up := range o.upTracks() {
			if d := p.down[up.kind]; up.addSink(d) {
				fresh = append(fresh, d)
			}
		}
	}
	c.subMu.Unlock()
	askKeyframes(fresh)
	p.log.Debug("participant joined")
	return p, nil
}

// askKeyframes asks the new sources of fresh for a keyframe; called with
// no lock held (a request may write RTCP at once).
func askKeyframes(fresh []*downTrack) {
	for _, d := range fresh {
		d.requestKeyframe()
	}
}

// publish makes up one of from's tracks and subscribes every other
// participant to it. A track that replaces an earlier one of the same kind
// (the publisher restarted it) takes over that track's subscribers. It
// reports false, and subscribes no one, when from is no longer in the call.
func (c *Call) publish(from *Participant, up *upTrack) bool {
	c.subMu.Lock()
	fresh, member := c.publishLocked(from, up)
	c.subMu.Unlock()
	askKeyframes(fresh)
	return member
}

func (c *Call) publishLocked(from *Participant, up *upTrack) (fresh []*downTrack, member bool) {
	others, member := c.othersOf(from)
	if !member {
		return nil, false
	}
	for _, old := range from.replaceUpTrack(up) {
		for _, o := range others {
			if d := o.down[old.kind]; d != nil {
				old.removeSink(d)
			}
		}
	}
	for _, o := range others {
		if d := o.down[up.kind]; d != nil && up.addSink(d) {
			fresh = append(fresh, d)
		}
	}
	return fresh, true
}

// remove takes p out of the call and unsubscribes it from everyone.
func (c *Call) remove(p *Participant) {
	c.subMu.Lock()
	defer c.subMu.Unlock()
	c.mu.Lock()
	for i, q := range c.parts {
		if q == p {
			c.parts = append(c.parts[:i], c.parts[i+1:]...)
			break
		}
	}
	others := append([]*Participant(nil), c.parts...)
	c.mu.Unlock()
	for _, o := range others {
		for _, up := range o.upTracks() {
			up.removeSink(p.down[up.kind])
		}
	}
	// And everyone from p's tracks (their read loops may run on until
	// p's PeerConnection is closed).
	for _, up := range p.upTracks() {
		for _, o := range others {
			up.removeSink(o.down[up.kind])
		}
	}
}

// othersOf returns the participants other than p, and whether p is one of
// the call's participants.
func (c *Call) othersOf(p *Participant) (others []*Participant, member bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	others = make([]*Participant, 0, len(c.parts))
	for _, q := range c.parts {
		if q == p {
			member = true
		} else {
			others = append(others, q)
		}
	}
	return others, member
}

func (c *Call) others(p *Participant) []*Participant {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*Participant, 0, len(c.parts))
	for _, q := range c.parts {
		if q != p {
			out = append(out, q)
		}
	}
	return out
}

// Close ends the call: every participant's PeerConnection is closed and its
// goroutines have ended when Close returns.
func (c *Call) Close() {
	c.mu.Lock()
	c.closed = true
	parts := append([]*Participant(nil), c.parts...)
	c.mu.Unlock()
	for _, p := range parts {
		p.Close()
	}
	c.sfu.mu.Lock()
	delete(c.sfu.calls, c)
	c.sfu.mu.Unlock()
}

func (c *Call) String() string { return fmt.Sprintf("call %s", c.id) }
