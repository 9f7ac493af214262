//go:build !linux

package turn

import (
	"net"
	"net/netip"
)

// udpReader and udpWriter use the socket's own methods outside Linux (see
// rawio_linux.go).
type udpReader struct{ conn *net.UDPConn }

func newUDPReader(conn *net.UDPConn) *udpReader { return &udpReader{conn: conn} }

func (r *udpReader) read(p []byte) (int, netip.AddrPort, error) {
	return r.conn.ReadFromUDPAddrPort(p)
}

type udpWriter struct{ conn *net.UDPConn }

func newUDPWriter(conn *net.UDPConn) *udpWriter { return &udpWriter{conn: conn} }

func (w *udpWriter) write(p []byte, addr netip.AddrPort) error {
	_, err := w.conn.WriteToUDPAddrPort(p, addr)
	return err
}
