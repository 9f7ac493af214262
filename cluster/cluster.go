// Package cluster lets several videochat nodes act as one service: names
// unique across nodes, presence across nodes, and signaling relayed
// between the node holding a user's WebSocket and the node hosting that
// user's call. Signaling sees it through Directory; Alone is the
// single-node implementation (a server without -redis-url behaves exactly
// as before) and Redis the shared one. Nothing outside this package knows
// that Redis exists.
package cluster

import (
	"context"
	"errors"
)

// ErrTaken is returned by Claim when another session, on any node, holds
// one of the name's keys.
var ErrTaken = errors.New("cluster: name taken")

// ErrUnavailable wraps failures to reach the other nodes (Redis down).
var ErrUnavailable = errors.New("the other servers cannot be reached right now")

// Claim is a held name; pass it back to Release.
type Claim struct {
	keys  []string
	value string
}

// Events is what a Directory tells its node. Every method must return
// quickly (enqueue, never wait for the network).
type Events interface {
	// LocalUsers returns the names online on this node.
	LocalUsers() []string
	// PresenceChanged: the users online on other nodes changed.
	PresenceChanged()
	// Deliver hands over a message another node relayed to this one, in
	// the order that node sent them.
	Deliver(from string, payload []byte)
	// NodeDown: node stopped (cleanly or not) or can no longer be reached;
	// whatever this node shares with it is over.
	NodeDown(node string)
}

// Directory answers "where is this user" across the cluster and carries
// messages between nodes.
type Directory interface {
	// Start begins heartbeats and delivery of events; called once.
	Start(ev Events)
	// ID is this node's id ("" when alone).
	ID() string
	// Claim takes a name for this node cluster-wide: keys are every form
	// the name must be unique in (the exact name first). ErrTaken when
	// held elsewhere; an error wrapping ErrUnavailable when the cluster
	// cannot be asked.
	Claim(ctx context.Context, keys []string) (Claim, error)
	// Release gives a claim back; it never blocks.
	Release(c Claim)
	// LocalChanged: this node's users changed (coalesced; never blocks).
	LocalChanged()
	// RemoteUsers returns the names online on the other live nodes, from a
	// cache (never blocks).
	RemoteUsers() []string
	// Peers returns the public media addresses (host:port) of the other
	// live nodes, from a cache (never blocks).
	Peers() []string
	// Alive reports whether node is another node seen alive, from a cache
	// (never blocks).
	Alive(node string) bool
	// Locate returns the live node holding the exact name key, "" if none.
	Locate(ctx context.Context, key string) (string, error)
	// Send relays payload to node, in order with earlier sends to it;
	// never blocks. An error wrapping ErrUnavailable when it cannot.
	Send(node string, payload []byte) error
	// Stats returns the node's cluster numbers (zero when alone).
	Stats() Stats
	// Close releases this node's names and leaves the cluster, after the
	// messages already sent are on their way (within ctx).
	Close(ctx context.Context) error
}

// Alone is the single-node Directory: every claim succeeds (the node's own
// map decides), there are no other users and no other nodes.
type Alone struct{}

func (Alone) Start(Events)                                   {}
func (Alone) ID() string                                     { return "" }
func (Alone) Claim(context.Context, []string) (Claim, error) { return Claim{}, nil }
func (Alone) Release(Claim)                                  {}
func (Alone) LocalChanged()                                  {}
func (Alone) RemoteUsers() []string                          { return nil }
func (Alone) Peers() []string                                { return nil }
func (Alone) Alive(string) bool                              { return false }
func (Alone) Locate(context.Context, string) (string, error) { return "", nil }
func (Alone) Send(string, []byte) error                      { return ErrUnavailable }
func (Alone) Close(context.Context) error                    { return nil }
func (Alone) Stats() Stats                                   { return Stats{} }
