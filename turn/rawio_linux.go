//go:build linux

package turn

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"unsafe"
)

// Relayed packets are read and written with raw, non-blocking recvfrom and
// sendto (MSG_DONTWAIT) inside the socket's syscall.RawConn: the runtime's
// poller still parks the reader until the socket is readable, but the
// system calls skip entersyscall/exitsyscall. When the process is mostly
// idle between packets (a TURN relay at a few thousand packets/s), every
// entersyscall after an idle spell wakes the runtime's sysmon thread with
// a futex: measured at ~9 % of the relay's CPU, and what puts a Go relay
// behind coturn. Neither call can block, so bypassing the bookkeeping is
// safe; a full send buffer drops the datagram (as coturn does) instead of
// waiting.

var errAddrFamily = errors.New("turn: address family does not match the socket")

// udpReader reads datagrams from one socket; one goroutine at a time.
type udpReader struct {
	conn *net.UDPConn
	rc   syscall.RawConn // nil: use conn's methods
	fn   func(fd uintptr) bool

	buf   []byte
	n     int
	from  syscall.RawSockaddrAny
	fromN uint32
	errno syscall.Errno
}

func newUDPReader(conn *net.UDPConn) *udpReader {
	r := &udpReader{conn: conn}
	if rc, err := conn.SyscallConn(); err == nil {
		r.rc = rc
		r.fn = r.recv
	}
	return r
}

func (r *udpReader) recv(fd uintptr) bool {
	for {
		r.fromN = syscall.SizeofSockaddrAny
		n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(r.buf))), uintptr(len(r.buf)), syscall.MSG_DONTWAIT,
			uintptr(unsafe.Pointer(&r.from)), uintptr(unsafe.Pointer(&r.fromN)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until readable
		}
		r.n, r.errno = int(n), e
		return true
	}
}

// read reads one datagram into p (len(p) > 0).
func (r *udpReader) read(p []byte) (int, netip.AddrPort, error) {
	if r.rc == nil || len(p) == 0 {
		return r.conn.ReadFromUDPAddrPort(p)
	}
	r.buf = p
	err := r.rc.Read(r.fn)
	r.buf = nil
	if err != nil {
		return 0, netip.AddrPort{}, err
	}
	if r.errno != 0 {
		return 0, netip.AddrPort{}, &net.OpError{Op: "read", Net: "udp", Err: r.errno}
	}
	ap, ok := rawToAddrPort(&r.from)
	if !ok {
		return 0, netip.AddrPort{}, &net.OpError{Op: "read", Net: "udp", Err: errAddrFamily}
	}
	return r.n, ap, nil
}

func rawToAddrPort(sa *syscall.RawSockaddrAny) (netip.AddrPort, bool) {
	switch sa.Addr.Family {
	case syscall.AF_INET:
		s4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(s4.Addr), ntohs(s4.Port)), true
	case syscall.AF_INET6:
		s6 := (*syscall.RawSockaddrInet6)(unsafe.Pointer(sa))
		a := netip.AddrFrom16(s6.Addr)
		if s6.Scope_id != 0 {
			a = a.WithZone(strconv.FormatUint(uint64(s6.Scope_id), 10))
		}
		return netip.AddrPortFrom(a, ntohs(s6.Port)), true
	}
	return netip.AddrPort{}, false
}

// ntohs reads a port stored in network byte order.
func ntohs(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func htons(p uint16) uint16 {
	var v uint16
	b := (*[2]byte)(unsafe.Pointer(&v))
	b[0], b[1] = byte(p>>8), byte(p)
	return v
}

// udpWriter sends datagrams on one socket; one goroutine at a time (each
// writing goroutine has its own).
type udpWriter struct {
	conn  *net.UDPConn
	rc    syscall.RawConn // nil: use conn's methods
	inet6 bool            // the socket is AF_INET6
	fn    func(fd uintptr) bool

	buf   []byte
	sa4   syscall.RawSockaddrInet4
	sa6   syscall.RawSockaddrInet6
	errno syscall.Errno
}

func newUDPWriter(conn *net.UDPConn) *udpWriter {
	w := &udpWriter{conn: conn}
	rc, err := conn.SyscallConn()
	if err != nil {
		return w
	}
	family := -1
	_ = rc.Control(func(fd uintptr) {
		switch sa, err := syscall.Getsockname(int(fd)); {
		case err != nil:
		case isInet4(sa):
			family = syscall.AF_INET
		default:
			if _, ok := sa.(*syscall.SockaddrInet6); ok {
				family = syscall.AF_INET6
			}
		}
	})
	if family < 0 {
		return w
	}
	w.rc, w.inet6 = rc, family == syscall.AF_INET6
	w.fn = w.send
	return w
}

func isInet4(sa syscall.Sockaddr) bool {
	_, ok := sa.(*syscall.SockaddrInet4)
	return ok
}

func (w *udpWriter) send(fd uintptr) bool {
	sa, n := unsafe.Pointer(&w.sa4), uintptr(syscall.SizeofSockaddrInet4)
	if w.inet6 {
		sa, n = unsafe.Pointer(&w.sa6), uintptr(syscall.SizeofSockaddrInet6)
	}
	for {
		_, _, e := syscall.RawSyscall6(syscall.SYS_SENDTO, fd,
			uintptr(unsafe.Pointer(unsafe.SliceData(w.buf))), uintptr(len(w.buf)), syscall.MSG_DONTWAIT,
			uintptr(sa), n)
		if e == syscall.EINTR {
			continue
		}
		w.errno = e // EAGAIN: the datagram is dropped, never waited for
		return true
	}
}

// write sends p to addr (unmapped IPv4 or IPv6, no zone).
func (w *udpWriter) write(p []byte, addr netip.AddrPort) error {
	if w.rc == nil {
		_, err := w.conn.WriteToUDPAddrPort(p, addr)
		return err
	}
	if w.inet6 {
		w.sa6 = syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Port: htons(addr.Port()), Addr: addr.Addr().As16()}
	} else {
		if !addr.Addr().Is4() {
			return errAddrFamily
		}
		w.sa4 = syscall.RawSockaddrInet4{Family: syscall.AF_INET, Port: htons(addr.Port()), Addr: addr.Addr().As4()}
	}
	w.buf = p
	err := w.rc.Write(w.fn)
	w.buf = nil
	if err != nil {
		return err
	}
	if w.errno != 0 {
		return w.errno
	}
	return nil
}
