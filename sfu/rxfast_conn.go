package sfu

import (
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/pion/transport/v4"
)

// fastConn is a media socket as pion's UDP mux sees it, with the receive
// fast path (rxfast.go) in its read loop: every datagram the table takes
// is handled in the reading goroutine and the next one read, without
// returning to pion; the rest is returned as read. It wraps any
// transport.UDPConn: a plain socket, a batchConn, or a vnet socket in
// tests.
//
// pion's mux reads it with ReadFromAddrPort (it implements
// ice.AddrPortReaderWriter); the other read methods of the wrapped socket
// are left as they are and see every datagram.
type fastConn struct {
	transport.UDPConn
	tab   *fastTable
	read  func([]byte) (int, netip.AddrPort, error)
	write func([]byte, netip.AddrPort) (int, error)

	scratch [maxPacket]byte // owned by the reading goroutine (pion's mux has one)
	taken   atomic.Uint64   // datagrams the fast path took
}

type addrPortReader interface {
	ReadFromAddrPort([]byte) (int, netip.AddrPort, error)
}

type addrPortWriter interface {
	WriteToAddrPort([]byte, netip.AddrPort) (int, error)
}

func newFastConn(c transport.UDPConn, tab *fastTable) *fastConn {
	f := &fastConn{UDPConn: c, tab: tab}
	switch r := c.(type) {
	case *net.UDPConn:
		f.read, f.write = r.ReadFromUDPAddrPort, r.WriteToUDPAddrPort
		return f
	case addrPortReader:
		f.read = r.ReadFromAddrPort
	default:
		f.read = f.readFrom
	}
	if w, ok := c.(addrPortWriter); ok {
		f.write = w.WriteToAddrPort
	} else {
		f.write = f.writeTo
	}
	return f
}

// ReadFromAddrPort returns the next datagram the fast path does not take,
// or the copy of a taken one that pion is to see (rxfast.go).
func (f *fastConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	for {
		n, from, err := f.read(p)
		if err != nil {
			return n, from, err
		}
		v, c := f.tab.handle(p[:n], from, f.scratch[:], f)
		if v == toPion {
			return n, from, nil
		}
		f.taken.Add(1)
		if v == takenPass {
			return copy(p, f.scratch[:c]), from, nil
		}
	}
}

// WriteToAddrPort writes p to addr.
func (f *fastConn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	return f.write(p, addr)
}

// readFrom serves sockets without AddrPort reads (vnet's); it allocates.
func (f *fastConn) readFrom(p []byte) (int, netip.AddrPort, error) {
	n, addr, err := f.UDPConn.ReadFrom(p)
	if err != nil {
		return n, netip.AddrPort{}, err
	}
	var ap netip.AddrPort
	if u, ok := addr.(*net.UDPAddr); ok {
		ap = u.AddrPort()
	}
	return n, ap, nil
}

func (f *fastConn) writeTo(p []byte, addr netip.AddrPort) (int, error) {
	return f.UDPConn.WriteTo(p, net.UDPAddrFromAddrPort(addr))
}
