package signaling

import (
	"context"
	"errors"
	"slices"

	"videochat/cluster"
)

// The cluster (Config.Cluster) is asked where a user is: a login claims
// its name across every node, presence merges the other nodes' users, and
// calls with a user of another node are relayed (relay.go). With
// cluster.Alone, the default, every claim succeeds and nothing else
// changes: the node's own maps decide, as they always did.

// clusterEvents is the Server as the cluster's listener.
type clusterEvents struct{ s *Server }

func (e clusterEvents) LocalUsers() []string {
	s := e.s
	s.mu.Lock()
	defer s.mu.Unlock()
	names := make([]string, 0, len(s.names))
	for name := range s.names {
		names = append(names, name)
	}
	return names
}

func (e clusterEvents) PresenceChanged() { e.s.presenceChanged() }

func (e clusterEvents) Deliver(from string, payload []byte) { e.s.deliver(from, payload) }

func (e clusterEvents) NodeDown(node string) { e.s.nodeDown(node) }

// clustered reports whether other nodes exist to ask.
func (s *Server) clustered() bool { return s.cfg.Cluster.ID() != "" }

// claimName takes name across the cluster for a login on c. It returns a
// message for the person when it cannot.
func (s *Server) claimName(c *client, name string) (cluster.Claim, string) {
	if !s.clustered() {
		return cluster.Claim{}, ""
	}
	s.mu.Lock()
	ss := c.sess
	s.mu.Unlock()
	if ss != nil {
		return cluster.Claim{}, "already logged in as " + ss.name
	}
	keys := nameKeys(name)
	claim, err := s.cfg.Cluster.Claim(context.Background(), []string{"n:" + name, keys[0], keys[1]})
	switch {
	case errors.Is(err, cluster.ErrTaken):
		return claim, "the name " + name + " is taken (or one that looks the same), choose another"
	case err != nil:
		s.log.Warn("cluster: cannot claim a name", "name", name, "err", err)
		return claim, "signing in is not possible right now (" + cluster.ErrUnavailable.Error() + "); try again in a moment"
	}
	return claim, ""
}

// holdClaim records the claim of a new session; s.mu held.
func (s *Server) holdClaim(ss *session, c cluster.Claim) {
	if !s.clustered() {
		return
	}
	if s.claims == nil {
		s.claims = map[*session]cluster.Claim{}
	}
	s.claims[ss] = c
}

// releaseClaim gives back the name of an ended session.
func (s *Server) releaseClaim(ss *session) {
	s.mu.Lock()
	c, ok := s.claims[ss]
	delete(s.claims, ss)
	s.mu.Unlock()
	if ok {
		s.cfg.Cluster.Release(c)
	}
}

// withRemoteUsers adds the other nodes' users to this node's names.
func (s *Server) withRemoteUsers(names []string) []string {
	remote := s.cfg.Cluster.RemoteUsers()
	if len(remote) == 0 {
		return names
	}
	names = append(names, remote...)
	slices.Sort(names)
	return slices.Compact(names) // a user moving between nodes may show twice for a moment
}
