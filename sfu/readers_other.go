//go:build !linux

package sfu

import (
	"errors"
	"net"
)

// listenReusePort: one socket per address on this platform (its
// SO_REUSEPORT does not spread datagrams over the sockets).
func listenReusePort(string, *net.UDPAddr, int) ([]*net.UDPConn, error) {
	return nil, errors.ErrUnsupported
}
