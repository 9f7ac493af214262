//go:build !linux

package sfu

import (
	"net"

	"github.com/pion/transport/v4"
)

// wrapMediaConn: no batched reads or raw system calls on this platform.
func wrapMediaConn(c *net.UDPConn, _, _ bool) transport.UDPConn { return c }
