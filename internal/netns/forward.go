package netns

import (
	"io"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Dial connects from inside the namespace.
func (ns *NS) Dial(network, addr string) (net.Conn, error) {
	var conn net.Conn
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		// The thread enters the namespace and is never unlocked, so the
		// runtime discards it when this goroutine ends.
		runtime.LockOSThread()
		f, e := os.Open("/var/run/netns/" + ns.Name)
		if e != nil {
			err = e
			return
		}
		defer f.Close()
		if e := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); e != nil {
			err = e
			return
		}
		conn, err = net.Dial(network, addr)
	}()
	<-done
	return conn, err
}

// ForwardLoopback listens on a free host loopback TCP port and forwards each
// connection to the same port on the namespace's loopback (e.g. to reach a
// DevTools endpoint that listens only on 127.0.0.1 inside). It returns the
// port; forwarding stops when the test ends.
func (ns *NS) ForwardLoopback() int {
	ns.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		ns.t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			track(c)
			wg.Add(1)
			go func() {
				defer wg.Done()
				inner, err := ns.Dial("tcp", ln.Addr().String())
				for try := 0; err != nil && try < 20; try++ { // not listening yet
					time.Sleep(50 * time.Millisecond)
					inner, err = ns.Dial("tcp", ln.Addr().String())
				}
				if err != nil {
					_ = c.Close()
					return
				}
				track(inner)
				pipe(c, inner)
			}()
		}
	}()
	ns.t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return port
}

// pipe copies both ways until either side closes.
func pipe(a, b net.Conn) {
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
		done <- struct{}{}
	}
	go cp(a, b)
	go cp(b, a)
	<-done
	<-done
}
