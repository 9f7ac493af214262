package sfu

import (
	"errors"
	"fmt"
	"net"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/stdnet"
)

// mediaNet is the network pion's NewMultiUDPMuxFromPort opens the media
// sockets through (so its interface and address filters, buffer sizes and
// loopback option apply unchanged): the real network or Config.Net, with
// the sockets read in batches (batched, real network on Linux:
// batchconn_linux.go), read and written with raw system calls (raw, real
// network on Linux: rawconn_linux.go) and through the receive fast path (fast non-nil:
// rxfast_conn.go), by several readers per address (readers > 1, real
// network and fast path only: readers.go).
type mediaNet struct {
	transport.Net
	batched bool
	raw     bool
	fast    *fastTable
	readers int
	opened  *readerSet // the readersConns opened
}

// newMediaNet wraps n (nil: the real network); readers > 1 opens that
// many sockets per address when n is nil and fast is not. batched and
// raw apply to the real network only.
func newMediaNet(n transport.Net, batched, raw bool, fast *fastTable, readers int) (mediaNet, error) {
	if n != nil || fast == nil {
		readers = 1
	}
	if n != nil {
		batched, raw = false, false
	}
	if n == nil {
		var err error
		if n, err = stdnet.NewNet(); err != nil {
			return mediaNet{}, fmt.Errorf("sfu: network: %w", err)
		}
	}
	return mediaNet{Net: n, batched: batched, raw: raw, fast: fast, readers: readers, opened: &readerSet{}}, nil
}

// ListenUDP opens a media socket.
func (n mediaNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	if n.readers > 1 {
		socks, err := listenReusePort(network, laddr, n.readers)
		if err == nil {
			return n.readersConn(socks), nil
		}
		if !errors.Is(err, errors.ErrUnsupported) {
			return nil, err
		}
	}
	c, err := n.Net.ListenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	if u, ok := c.(*net.UDPConn); ok {
		c = wrapMediaConn(u, n.batched, n.raw)
	}
	if n.fast != nil {
		c = newFastConn(c, n.fast)
	}
	return c, nil
}

// readersConn reads socks, each wrapped as ListenUDP wraps one socket.
func (n mediaNet) readersConn(socks []*net.UDPConn) *readersConn {
	cs := make([]transport.UDPConn, len(socks))
	for i, u := range socks {
		cs[i] = wrapMediaConn(u, n.batched, n.raw)
	}
	r := newReadersConn(cs, n.fast)
	n.opened.add(r)
	return r
}
