package sfu

import (
	"fmt"
	"net"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
)

// mediaNet is the network pion's NewMultiUDPMuxFromPort opens the media
// sockets through (so its interface and address filters, buffer sizes and
// loopback option apply unchanged): the real network or Config.Net, with
// the sockets read in batches (batched, real network on Linux:
// batchconn_linux.go) and through the receive fast path (fast non-nil:
// rxfast_conn.go).
type mediaNet struct {
	transport.Net
	batched bool
	fast    *fastTable
}

// newMediaNet wraps n (nil: the real network).
func newMediaNet(n transport.Net, batched bool, fast *fastTable) (transport.Net, error) {
	if n == nil {
		var err error
		if n, err = stdnet.NewNet(); err != nil {
			return nil, fmt.Errorf("sfu: network: %w", err)
		}
	}
	return mediaNet{Net: n, batched: batched, fast: fast}, nil
}

// ListenUDP opens a media socket.
func (n mediaNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	if u, ok := c.(*net.UDPConn); ok && n.batched {
		c = wrapMediaConn(u)
	}
	if n.fast != nil {
		c = newFastConn(c, n.fast)
	}
	return c, nil
}
