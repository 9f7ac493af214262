package sfu

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/transport/v4"
	"github.com/pion/transport/v4/deadline"
)

// Several readers per media address (Config.MediaReaders). With the
// receive fast path, the goroutine that reads a media socket forwards
// every RTP packet it takes (rxfast_conn.go), so one socket caps the
// server's forwarding at one core. readersConn opens K sockets on the
// same address with SO_REUSEPORT (readers_linux.go): the kernel hashes
// each remote address and port to one of them, so a peer's packets stay
// in order on one reader, and K goroutines, one per socket, run the fast
// path in parallel. pion's UDP mux sees one socket: its read loop takes
// what the readers hand it (the datagrams the fast path does not take,
// and its copies for pion) from a bounded queue, in each reader's order;
// its writes go out through the first socket (same address and port).

const (
	// maxMediaReaders caps the default number of sockets per address.
	maxMediaReaders = 4
	// handoffSize is pion's receive MTU: a longer datagram is truncated,
	// as in pion's own reader.
	handoffSize = 8192
	// handoffQueue datagrams at most wait for pion's read loop; past that
	// a reader drops what pion was to see (counted as
	// ReceivePathStats.Overflow) rather than stall the media it forwards.
	// What pion sees after setup is RTCP and STUN, a few hundred
	// datagrams a second at 50 calls.
	handoffQueue = 256
	// readersCloseWait bounds Close's wait for the readers.
	readersCloseWait = 5 * time.Second
)

// defaultMediaReaders is the number of sockets per address when the
// configuration does not say (Config.MediaReaders 0).
func defaultMediaReaders() int { return min(runtime.GOMAXPROCS(0), maxMediaReaders) }

var errReadersStuck = errors.New("sfu: media readers did not stop")

// handoff is one datagram a reader hands pion's read loop.
type handoff struct {
	n    int
	from netip.AddrPort
	buf  [handoffSize]byte
}

// readersConn is K media sockets on one address read by K goroutines
// (see above). It implements ice.AddrPortReaderWriter.
type readersConn struct {
	transport.UDPConn // the first socket: writes, addresses, write deadline
	write             func([]byte, netip.AddrPort) (int, error)

	socks []transport.UDPConn
	fast  []*fastConn // socks[i] with the fast path, read by reader i
	tab   *fastTable
	queue chan *handoff // to pion's read loop
	free  chan *handoff // buffers to reuse
	read  *deadline.Deadline
	done  chan struct{} // closed by Close
	stop  sync.Once

	failed   chan struct{} // closed when a reader fails (err set before)
	failOnce sync.Once
	err      error

	handed  []atomic.Uint64 // datagrams handed to pion, per reader
	readers sync.WaitGroup
}

// newReadersConn takes over socks (all on one address) and starts their
// readers; tab must not be nil.
func newReadersConn(socks []transport.UDPConn, tab *fastTable) *readersConn {
	r := &readersConn{
		UDPConn: socks[0], socks: socks, tab: tab,
		queue:  make(chan *handoff, handoffQueue),
		free:   make(chan *handoff, handoffQueue+len(socks)+1),
		read:   deadline.New(),
		done:   make(chan struct{}),
		failed: make(chan struct{}),
		handed: make([]atomic.Uint64, len(socks)),
	}
	for _, s := range socks {
		r.fast = append(r.fast, newFastConn(s, tab))
	}
	r.write = r.fast[0].WriteToAddrPort
	r.readers.Add(len(socks))
	for i := range socks {
		go r.run(i)
	}
	return r
}

// run is reader i: it reads socket i through the fast path and queues
// what pion is to see.
func (r *readersConn) run(i int) {
	defer r.readers.Done()
	fc := r.fast[i]
	var h *handoff
	for {
		if h == nil {
			h = r.buffer()
		}
		n, from, err := fc.ReadFromAddrPort(h.buf[:])
		if err != nil {
			r.fail(err)
			return
		}
		h.n, h.from = n, from
		select {
		case r.queue <- h:
			h = nil
			r.handed[i].Add(1)
		default:
			r.tab.stats.overflow.Add(1) // h is reused for the next read
		}
	}
}

// buffer returns a free handoff buffer, or a new one: at most
// handoffQueue+K+1 are ever in use, so the steady state allocates none.
func (r *readersConn) buffer() *handoff {
	select {
	case h := <-r.free:
		return h
	default:
		return new(handoff)
	}
}

// fail passes a reader's error to pion's read loop (which then closes
// the mux, and with it this conn), unless the conn is closing.
func (r *readersConn) fail(err error) {
	select {
	case <-r.done:
		return
	default:
	}
	r.failOnce.Do(func() {
		r.err = err
		close(r.failed)
	})
}

// ReadFromAddrPort returns the next datagram a reader handed over, waiting
// up to the read deadline.
func (r *readersConn) ReadFromAddrPort(p []byte) (int, netip.AddrPort, error) {
	select {
	case h := <-r.queue:
		return r.take(h, p)
	default:
	}
	select {
	case h := <-r.queue:
		return r.take(h, p)
	case <-r.done:
		return 0, netip.AddrPort{}, r.opError(net.ErrClosed)
	case <-r.failed:
		return 0, netip.AddrPort{}, r.err
	case <-r.read.Done():
		return 0, netip.AddrPort{}, r.opError(os.ErrDeadlineExceeded)
	}
}

// take copies h into p (truncating, as a socket does) and frees h.
func (r *readersConn) take(h *handoff, p []byte) (int, netip.AddrPort, error) {
	n, from := copy(p, h.buf[:h.n]), h.from
	select {
	case r.free <- h:
	default:
	}
	return n, from, nil
}

func (r *readersConn) opError(err error) error {
	return &net.OpError{Op: "read", Net: "udp", Source: r.LocalAddr(), Err: err}
}

// ReadFromUDPAddrPort is ReadFromAddrPort.
func (r *readersConn) ReadFromUDPAddrPort(p []byte) (int, netip.AddrPort, error) {
	return r.ReadFromAddrPort(p)
}

// ReadFrom is ReadFromAddrPort with a *net.UDPAddr (which allocates).
func (r *readersConn) ReadFrom(p []byte) (int, net.Addr, error) {
	n, from, err := r.ReadFromUDP(p)
	if err != nil {
		return 0, nil, err
	}
	return n, from, nil
}

// ReadFromUDP is ReadFrom.
func (r *readersConn) ReadFromUDP(p []byte) (int, *net.UDPAddr, error) {
	n, from, err := r.ReadFromAddrPort(p)
	if err != nil {
		return 0, nil, err
	}
	return n, net.UDPAddrFromAddrPort(from), nil
}

// Read is ReadFromAddrPort without the address.
func (r *readersConn) Read(p []byte) (int, error) {
	n, _, err := r.ReadFromAddrPort(p)
	return n, err
}

// ReadMsgUDP reads the next datagram; no control messages are received.
func (r *readersConn) ReadMsgUDP(p, _ []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	n, addr, err = r.ReadFromUDP(p)
	return n, 0, 0, addr, err
}

// WriteToAddrPort writes through the first socket.
func (r *readersConn) WriteToAddrPort(p []byte, addr netip.AddrPort) (int, error) {
	return r.write(p, addr)
}

// SetReadDeadline applies to ReadFromAddrPort (pion's side); the sockets'
// readers never time out.
func (r *readersConn) SetReadDeadline(t time.Time) error {
	r.read.Set(t)
	return nil
}

// SetDeadline sets the read deadline and the first socket's write
// deadline.
func (r *readersConn) SetDeadline(t time.Time) error {
	r.read.Set(t)
	return r.UDPConn.SetWriteDeadline(t)
}

// SetReadBuffer sizes every socket's receive buffer.
func (r *readersConn) SetReadBuffer(bytes int) error {
	var errs []error
	for _, s := range r.socks {
		errs = append(errs, s.SetReadBuffer(bytes))
	}
	return errors.Join(errs...)
}

// SetWriteBuffer sizes every socket's send buffer.
func (r *readersConn) SetWriteBuffer(bytes int) error {
	var errs []error
	for _, s := range r.socks {
		errs = append(errs, s.SetWriteBuffer(bytes))
	}
	return errors.Join(errs...)
}

// Close closes the sockets and waits for the readers (at most
// readersCloseWait: a reader is then stuck forwarding).
func (r *readersConn) Close() error {
	var errs []error
	r.stop.Do(func() {
		close(r.done)
		for _, s := range r.socks {
			errs = append(errs, s.Close())
		}
	})
	ended := make(chan struct{})
	go func() { r.readers.Wait(); close(ended) }()
	t := time.NewTimer(readersCloseWait)
	defer t.Stop()
	select {
	case <-ended:
	case <-t.C:
		errs = append(errs, errReadersStuck)
	}
	return errors.Join(errs...)
}

// taken returns the datagrams each reader's fast path took.
func (r *readersConn) taken() []uint64 {
	out := make([]uint64, len(r.fast))
	for i, f := range r.fast {
		out[i] = f.taken.Load()
	}
	return out
}

// readerSet lists the readersConns a mediaNet opened (for the counts).
type readerSet struct {
	mu    sync.Mutex
	conns []*readersConn
}

func (s *readerSet) add(c *readersConn) {
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.mu.Unlock()
}

// taken returns the datagrams each reader of each conn took, in order.
func (s *readerSet) taken() []uint64 {
	s.mu.Lock()
	conns := append([]*readersConn(nil), s.conns...)
	s.mu.Unlock()
	var out []uint64
	for _, c := range conns {
		out = append(out, c.taken()...)
	}
	return out
}
