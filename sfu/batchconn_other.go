//go:build !linux

package sfu

import (
	"net"

	"github.com/pion/transport/v4"
)

// wrapMediaConn: no batched reads on this platform.
func wrapMediaConn(c *net.UDPConn) transport.UDPConn { return c }
