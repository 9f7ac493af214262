//go:build linux

package sfu

import (
	"context"
	"fmt"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// listenReusePort opens k UDP sockets on laddr with SO_REUSEPORT, so the
// kernel spreads the remote addresses over them. With port 0 the first
// takes an ephemeral port and the others join it there.
func listenReusePort(network string, laddr *net.UDPAddr, k int) ([]*net.UDPConn, error) {
	lc := net.ListenConfig{Control: setReusePort}
	addr := *laddr
	conns := make([]*net.UDPConn, 0, k)
	for range k {
		c, err := lc.ListenPacket(context.Background(), network, addr.String())
		if err != nil {
			closeUDPConns(conns)
			return nil, err
		}
		u, ok := c.(*net.UDPConn)
		if !ok {
			_ = c.Close()
			closeUDPConns(conns)
			return nil, fmt.Errorf("sfu: media socket is a %T", c)
		}
		conns = append(conns, u)
		if addr.Port == 0 {
			if la, ok := u.LocalAddr().(*net.UDPAddr); ok {
				addr.Port = la.Port
			}
		}
	}
	return conns, nil
}

// setReusePort is net.ListenConfig's Control: SO_REUSEPORT before bind.
func setReusePort(_, _ string, rc syscall.RawConn) error {
	var opErr error
	err := rc.Control(func(fd uintptr) {
		opErr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
	})
	if err != nil {
		return err
	}
	return opErr
}

func closeUDPConns(conns []*net.UDPConn) {
	for _, c := range conns {
		_ = c.Close()
	}
}
