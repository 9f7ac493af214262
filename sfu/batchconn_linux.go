//go:build linux

package sfu

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"unsafe"

	"github.com/pion/transport/v4"
)

// batchConn is a UDP socket whose reads are served from batches of up to
// batchSize datagrams taken from the kernel with one recvmmsg(2) each:
// when the socket's queue holds several packets (bursts of video, or the
// reader woken late on a busy machine), one system call and one netpoll
// wake-up serve them all. Writes go straight to the socket.
//
// pion's UDP mux reads it through ReadFromAddrPort (it implements
// ice.AddrPortReaderWriter), one reader goroutine per socket; every read
// method takes the next datagram of the batch, so readers may mix them.
// A read allocates nothing; reads are serialised by a mutex.
type batchConn struct {
	*net.UDPConn
	rc syscall.RawConn

	raw *rawConn // writes, and recvmmsg as a raw system call (nil: net's)

	mu    sync.Mutex // serialises readers; guards all below
	hdrs  []mmsghdr
	iovs  []syscall.Iovec
	names []syscall.RawSockaddrInet6
	bufs  []byte // batchSize slots of slotSize bytes
	n     int    // datagrams in the batch
	next  int    // next one to hand out
	recvF func(fd uintptr) bool
	vlen  int   // datagrams asked for by the next recvmmsg
	rn    int   // recvmmsg's result, set in recvF
	rerr  error // recvmmsg's error, set in recvF
	idle  bool  // the last read found the socket empty and waited
	zones zoneCache
}

// mmsghdr is struct mmsghdr of <sys/socket.h>; Go pads it as C does
// (64 bytes on 64-bit, 32 on 32-bit Linux).
type mmsghdr struct {
	hdr syscall.Msghdr
	len uint32
}

const (
	// batchSize datagrams at most per recvmmsg: 2 ms of 50 calls' packets.
	batchSize = 32
	// slotSize is pion's receive MTU: a datagram longer than that is
	// truncated, as in pion's own reader.
	slotSize = 8192
)

// newBatchConn takes over c: reads through the batch, writes directly;
// with raw, both as raw system calls (rawconn_linux.go).
func newBatchConn(c *net.UDPConn, raw bool) (*batchConn, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	b := &batchConn{
		UDPConn: c,
		rc:      rc,
		hdrs:    make([]mmsghdr, batchSize),
		iovs:    make([]syscall.Iovec, batchSize),
		names:   make([]syscall.RawSockaddrInet6, batchSize),
		bufs:    make([]byte, batchSize*slotSize),
	}
	for i := range b.hdrs {
		b.iovs[i].Base = &b.bufs[i*slotSize]
		b.iovs[i].SetLen(slotSize)
		h := &b.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&b.names[i]))
		h.Iov = &b.iovs[i]
		h.Iovlen = 1
	}
	if raw {
		b.raw = newRawConn(c)
	}
	b.recvF = b.recv // bound once: RawConn.Read with a method value allocates
	return b, nil
}

// ReadFromAddrPort returns the next datagram: from the current batch, or
// from a new one (waiting for one, up to the read deadline). A datagram
// longer than p is truncated to len(p), as net.UDPConn does.
func (b *batchConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.next >= b.n {
		if err := b.fill(); err != nil {
			return 0, netip.AddrPort{}, &net.OpError{Op: "read", Net: "udp", Source: b.UDPConn.LocalAddr(), Err: err}
		}
	}
	i := b.next
	b.next++
	h := &b.hdrs[i]
	n := int(h.len)
	if n > slotSize {
		n = slotSize
	}
	n = copy(p, b.bufs[i*slotSize:i*slotSize+n])
	return n, sockaddrAddrPort(&b.names[i], h.hdr.Namelen, &b.zones), nil
}

// fill reads a new batch; b.mu is held.
//
// A batch pays off only when datagrams are queued: with one waiting,
// recvmmsg costs more than recvfrom (it tries once more and finds the
// socket empty). So a reader that had to wait for its last datagram (it
// keeps up) asks for one, and one that found datagrams waiting (it is
// behind) asks for a whole batch.
func (b *batchConn) fill() error {
	b.n, b.next = 0, 0
	b.vlen = 1
	if !b.idle {
		b.vlen = len(b.hdrs)
	}
	for i := range b.hdrs[:b.vlen] {
		b.hdrs[i].hdr.Namelen = syscall.SizeofSockaddrInet6
		b.hdrs[i].hdr.Flags = 0
		b.hdrs[i].len = 0
	}
	b.rn, b.rerr, b.idle = 0, nil, false
	if err := b.rc.Read(b.recvF); err != nil {
		return err
	}
	if b.rerr != nil {
		return b.rerr
	}
	b.n = b.rn
	return nil
}

// recv is the RawConn.Read callback: false asks to wait for readiness.
func (b *batchConn) recv(fd uintptr) bool {
	for {
		var n uintptr
		var errno syscall.Errno
		if b.raw != nil { // never blocks: MSG_DONTWAIT (rawconn_linux.go)
			n, _, errno = syscall.RawSyscall6(sysRecvmmsg, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(b.vlen),
				syscall.MSG_DONTWAIT, 0, 0)
		} else {
			n, _, errno = syscall.Syscall6(sysRecvmmsg, fd, uintptr(unsafe.Pointer(&b.hdrs[0])), uintptr(b.vlen),
				syscall.MSG_DONTWAIT, 0, 0)
		}
		switch errno {
		case 0:
			b.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			b.idle = true
			return false
		default:
			b.rerr = os.NewSyscallError("recvmmsg", errno)
			return true
		}
	}
}

// sockaddrAddrPort decodes the sender's address as net.UDPConn's
// ReadFromUDPAddrPort would (an IPv4-mapped IPv6 address stays mapped);
// zones names interface indexes (link-local senders).
func sockaddrAddrPort(sa *syscall.RawSockaddrInet6, namelen uint32, zones *zoneCache) netip.AddrPort {
	port := func(p uint16) uint16 {
		b := (*[2]byte)(unsafe.Pointer(&p))
		return uint16(b[0])<<8 | uint16(b[1])
	}
	switch {
	case sa.Family == syscall.AF_INET && namelen >= syscall.SizeofSockaddrInet4:
		sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port(sa4.Port))
	case sa.Family == syscall.AF_INET6 && namelen >= syscall.SizeofSockaddrInet6:
		ip := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			ip = ip.WithZone(zones.name(int(sa.Scope_id)))
		}
		return netip.AddrPortFrom(ip, port(sa.Port))
	}
	return netip.AddrPort{} // pion's mux rejects an invalid address
}

// zoneCache names interface indexes as net does, remembering the last
// one: a link-local sender's datagrams all carry the same index, and each
// lookup is a netlink query. Owned by one reader (under its lock).
type zoneCache struct {
	index int
	zone  string
}

func (z *zoneCache) name(index int) string {
	if index == z.index && z.zone != "" {
		return z.zone
	}
	zone := itoa(index)
	if ifi, err := net.InterfaceByIndex(index); err == nil {
		zone = ifi.Name
	}
	z.index, z.zone = index, zone
	return zone
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

// ReadFromUDPAddrPort is ReadFromAddrPort.
func (b *batchConn) ReadFromUDPAddrPort(p []byte) (int, netip.AddrPort, error) {
	return b.ReadFromAddrPort(p)
}

// ReadFrom is ReadFromAddrPort with a *net.UDPAddr (which allocates).
func (b *batchConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, ap, err := b.ReadFromAddrPort(p)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(ap), nil
}

// ReadFromUDP is ReadFrom.
func (b *batchConn) ReadFromUDP(p []byte) (int, *net.UDPAddr, error) {
	n, ap, err := b.ReadFromAddrPort(p)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(ap), nil
}

// Read is ReadFromAddrPort without the address.
func (b *batchConn) Read(p []byte) (int, error) {
	n, _, err := b.ReadFromAddrPort(p)
	return n, err
}

// ReadMsgUDP reads the next datagram; no control messages are received.
func (b *batchConn) ReadMsgUDP(p, _ []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	n, addr, err = b.ReadFromUDP(p)
	return n, 0, 0, addr, err
}

// WriteToAddrPort writes without allocating (ice.AddrPortReaderWriter).
func (b *batchConn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	if b.raw != nil {
		return b.raw.WriteToAddrPort(p, addr)
	}
	return b.UDPConn.WriteToUDPAddrPort(p, addr)
}

const sysRecvmmsg = syscall.SYS_RECVMMSG

// wrapMediaConn reads c in batches (batched) and with raw system calls
// (raw; rawconn_linux.go); what cannot be set up, plainly.
func wrapMediaConn(c *net.UDPConn, batched, raw bool) transport.UDPConn {
	if batched {
		if b, err := newBatchConn(c, raw); err == nil {
			return b
		}
	}
	if raw {
		if r := newRawConn(c); r != nil {
			return r
		}
	}
	return c
}
