package main

import (
	"net"
	"net/netip"
	"strconv"

	"videochat/cluster"
)

// joinCluster connects to the other nodes through -redis-url, or makes
// this node alone.
func (a *App) joinCluster() error {
	if a.cfg.RedisURL == "" {
		a.dir = cluster.Alone{}
		return nil
	}
	dir, err := cluster.NewRedis(cluster.Config{URL: a.cfg.RedisURL, ID: a.cfg.NodeID,
		Media: a.mediaAddr(), Beat: a.cfg.clusterBeat, TTL: a.cfg.clusterTTL,
		Logger: a.log.With("component", "cluster")})
	if err != nil {
		return err
	}
	a.dir = dir
	a.log.Info("cluster: joining", "node", dir.ID(), "media", a.mediaAddr())
	return nil
}

// mediaAddr is the media endpoint other nodes' TURN relays may reach.
func (a *App) mediaAddr() string {
	addrs := a.sfu.MediaAddrs()
	if len(addrs) == 0 {
		return ""
	}
	host := addrs[0].IP.String()
	if a.cfg.PublicIP != "" {
		host = a.cfg.PublicIP
	}
	return net.JoinHostPort(host, strconv.Itoa(addrs[0].Port))
}

// clusterPeer admits a TURN relay destination that is the media endpoint
// of another live node of the cluster (a user's call may be hosted on any
// node). Called with port 0 when a client asks for a permission for an
// IP. The turn package never admits loopback or private addresses this
// way, so this works for nodes with public media addresses (-public-ip).
func (a *App) clusterPeer(ap netip.AddrPort) bool {
	return peerIn(a.dir.Peers(), ap)
}

func peerIn(media []string, ap netip.AddrPort) bool {
	for _, m := range media {
		p, err := netip.ParseAddrPort(m)
		if err != nil || p.Addr().Unmap() != ap.Addr().Unmap() {
			continue
		}
		if ap.Port() == 0 || ap.Port() == p.Port() {
			return true
		}
	}
	return false
}
