//go:build linux

package sfu

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// rawConn is a UDP socket whose datagrams are read and written with raw
// system calls (syscall.RawSyscall6) instead of net's syscall.Syscall6;
// everything else is the socket's own (*net.UDPConn).
//
// Why: the media socket is read and written ~3 times per forwarded packet,
// and each syscall.Syscall6 tells the scheduler the goroutine may block
// (entersyscall/exitsyscall). While the server idles between packets the
// runtime's monitor thread (sysmon) goes to sleep; the next such call
// wakes it (a futex wake and a context switch), and a call caught in the
// kernel over one of its 20 µs ticks has its P handed to another thread.
// On a loopback sendto that also delivers the datagram (several µs) that
// happened thousands of times a second at 50 calls. A non-blocking UDP
// recvfrom/sendto never blocks (the socket is O_NONBLOCK and the call asks
// MSG_DONTWAIT too): it returns EAGAIN instead, and then the poller waits
// for readiness as net does (RawConn.Read/Write with a false return). That
// is the case syscall.RawSyscall is for.
//
// The cost: the kernel may still sleep inside such a call (direct memory
// reclaim when allocating the datagram, a page fault on the buffer), and
// then the goroutine keeps its P, where net's call would have handed it
// to another thread after ~20 µs, and a stop-the-world GC waits for the
// call. Under memory pressure that bad the host stalls anyway;
// Config.NetSyscalls (-net-syscalls) goes back to net's calls.
//
// Reads are serialised (pion's mux has one reader per socket); so are
// writes, by net's own write lock on the descriptor, but each prepares
// its destination before taking it, in its own state from a pool.
// Nothing allocates: the RawConn callbacks are bound once per state, and
// RawConn holds the descriptor open (and waits on deadlines) as net does.
type rawConn struct {
	*net.UDPConn
	rc     syscall.RawConn
	family int // the socket's address family: AF_INET or AF_INET6

	rmu   sync.Mutex
	rd    rawRecv   // guarded by rmu
	sends sync.Pool // *rawSend
}

type rawRecv struct {
	zones zoneCache
	p     []byte
	sa    syscall.RawSockaddrInet6
	salen uint32
	n     int
	err   error
	f     func(fd uintptr) bool
}

type rawSend struct {
	p     []byte
	sa    syscall.RawSockaddrInet6
	salen uintptr
	n     int
	err   error
	f     func(fd uintptr) bool
}

// newRawConn sets up raw I/O on c, or returns nil (then use c as it is).
func newRawConn(c *net.UDPConn) *rawConn {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	family := 0
	if err := rc.Control(func(fd uintptr) {
		family, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_DOMAIN)
	}); err != nil {
		return nil
	}
	if err != nil || (family != syscall.AF_INET && family != syscall.AF_INET6) {
		return nil
	}
	r := &rawConn{UDPConn: c, rc: rc, family: family}
	r.rd.f = r.rd.recv
	r.sends.New = func() any {
		s := &rawSend{}
		s.f = s.send
		return s
	}
	return r
}

// ReadFromAddrPort reads a datagram as net.UDPConn's ReadFromUDPAddrPort.
func (r *rawConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	if len(p) == 0 {
		return r.UDPConn.ReadFromUDPAddrPort(p)
	}
	r.rmu.Lock()
	defer r.rmu.Unlock()
	d := &r.rd
	d.p, d.n, d.err = p, 0, nil
	err := r.rc.Read(d.f)
	d.p = nil
	if err == nil {
		err = d.err
	}
	if err != nil {
		return 0, netip.AddrPort{}, &net.OpError{Op: "read", Net: "udp", Source: r.UDPConn.LocalAddr(), Err: err}
	}
	return d.n, sockaddrAddrPort(&d.sa, d.salen, &d.zones), nil
}

func (d *rawRecv) recv(fd uintptr) bool {
	for {
		d.salen = syscall.SizeofSockaddrInet6
		n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&d.p[0])), uintptr(len(d.p)),
			syscall.MSG_DONTWAIT, uintptr(unsafe.Pointer(&d.sa)), uintptr(unsafe.Pointer(&d.salen)))
		switch errno {
		case 0:
			d.n = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			d.err = os.NewSyscallError("recvfrom", errno)
			return true
		}
	}
}

// WriteToAddrPort writes a datagram as net.UDPConn's WriteToUDPAddrPort.
func (r *rawConn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	s := r.sends.Get().(*rawSend)
	defer r.sends.Put(s)
	if len(p) == 0 || !s.setAddr(r.family, addr) {
		return r.UDPConn.WriteToUDPAddrPort(p, addr) // zones, mismatched families: net's errors
	}
	s.p, s.n, s.err = p, 0, nil
	err := r.rc.Write(s.f)
	s.p = nil
	if err == nil {
		err = s.err
	}
	if err != nil {
		return 0, &net.OpError{Op: "write", Net: "udp", Source: r.UDPConn.LocalAddr(), Addr: net.UDPAddrFromAddrPort(addr), Err: err}
	}
	return s.n, nil
}

// setAddr fills s's sockaddr for addr on a socket of the given family;
// false for what net handles specially (zones, IPv6 on an IPv4 socket).
func (s *rawSend) setAddr(family int, addr netip.AddrPort) bool {
	ip := addr.Addr()
	if ip.Zone() != "" {
		return false
	}
	port := addr.Port()
	if family == syscall.AF_INET {
		if !ip.Unmap().Is4() {
			return false
		}
		sa := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&s.sa))
		*sa = syscall.RawSockaddrInet4{Family: syscall.AF_INET, Addr: ip.Unmap().As4()}
		putPort(&sa.Port, port)
		s.salen = syscall.SizeofSockaddrInet4
		return true
	}
	if !ip.IsValid() {
		return false
	}
	s.sa = syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Addr: ip.As16()}
	putPort(&s.sa.Port, port)
	s.salen = syscall.SizeofSockaddrInet6
	return true
}

// putPort stores port in network byte order.
func putPort(dst *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(dst))
	b[0], b[1] = byte(port>>8), byte(port)
}

func (s *rawSend) send(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&s.p[0])), uintptr(len(s.p)),
			syscall.MSG_DONTWAIT, uintptr(unsafe.Pointer(&s.sa)), s.salen)
		switch errno {
		case 0:
			s.n = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			s.err = os.NewSyscallError("sendto", errno)
			return true
		}
	}
}

// ReadFromUDPAddrPort is ReadFromAddrPort.
func (r *rawConn) ReadFromUDPAddrPort(p []byte) (int, netip.AddrPort, error) {
	return r.ReadFromAddrPort(p)
}

// WriteToUDPAddrPort is WriteToAddrPort.
func (r *rawConn) WriteToUDPAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	return r.WriteToAddrPort(p, addr)
}
