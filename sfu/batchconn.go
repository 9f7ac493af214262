package sfu

import (
	"fmt"
	"net"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
)

// mediaNet is the real network with the media sockets read in batches
// (batchconn_linux.go; elsewhere plain sockets). pion's
// NewMultiUDPMuxFromPort opens the sockets through it, so its interface
// and address filters, buffer sizes and loopback option apply unchanged.
type mediaNet struct {
	transport.Net
}

func newMediaNet() (transport.Net, error) {
	n, err := stdnet.NewNet()
	if err != nil {
		return nil, fmt.Errorf("sfu: network: %w", err)
	}
	return mediaNet{n}, nil
}

// ListenUDP opens a UDP socket read in batches where the platform allows.
func (n mediaNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	return wrapMediaConn(c), nil
}
