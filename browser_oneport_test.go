package main

import (
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"videochat/internal/browsertest"
	"videochat/internal/netns"
)

// onePortBrowser starts the app with a certificate on one port and
// Chromium in a namespace whose firewall lets through nothing but TCP to
// that port (no UDP at all, not the TURN ports). It returns the page URL.
func onePortBrowser(t *testing.T, iceTCP bool) (*App, *browsertest.Browser, string) {
	t.Helper()
	ns := netns.New(t) // before the app, so the SFU listens on the veth too
	cert, key := writeSelfSigned(t)
	app := startApp(t, func(c *Config) {
		c.Addr, c.TURNAddr, c.TURNSecret = ":0", ":0", "s3cret"
		c.TLSCert, c.TLSKey = cert, key
		c.ICETCP = iceTCP
	})
	port := app.ln.Addr().(*net.TCPAddr).Port
	ns.OnlyTCPPort(port)
	url := fmt.Sprintf("https://%s/", net.JoinHostPort(ns.HostIP, fmt.Sprint(port)))
	chromium, err := browsertest.Path()
	if err != nil {
		t.Fatal(err)
	}
	b := browsertest.Launch(t,
		chromedp.ExecPath(ns.Wrapper(chromium)),
		chromedp.Flag("remote-debugging-port", fmt.Sprint(ns.ForwardLoopback())),
		// The test certificate names localhost, not the veth address;
		// this also covers the turns: connection.
		chromedp.Flag("ignore-certificate-errors", true))
	return app, b, url
}

// TestBrowserOnlyOnePortICETCP: with nothing but TCP to the one port open,
// a call completes over ICE-TCP straight to the SFU: the selected pair
// ends at a TCP host candidate of the server on that port, no relay.
func TestBrowserOnlyOnePortICETCP(t *testing.T) {
	app, b, url := onePortBrowser(t, true)
	port := app.ln.Addr().(*net.TCPAddr).Port
	caller, callee := browserCall(t, b, url)
	for name, tab := range map[string]*browsertest.Tab{"caller": caller, "callee": callee} {
		s := stats(tab)
		t.Logf("%s: local %s/%s %s, remote %s/%s %s:%d", name, s.Local.Type, s.Local.Protocol, s.Local.Relay,
			s.Remote.Type, s.Remote.Protocol, s.Remote.Address, s.Remote.Port)
		if s.Local.Type == "relay" || s.Remote.Type != "host" || s.Remote.Protocol != "tcp" || s.Remote.Port != port {
			t.Errorf("%s: selected pair local %+v remote %+v, want a TCP host candidate of the server on port %d", name, s.Local, s.Remote, port)
		}
	}
}

// TestBrowserOnlyOnePortTURNTLS: the same network with ICE-TCP off: the
// call is relayed by the embedded TURN server, reached over TLS on the one
// port.
func TestBrowserOnlyOnePortTURNTLS(t *testing.T) {
	app, b, url := onePortBrowser(t, false)
	caller, callee := browserCall(t, b, url)
	for name, tab := range map[string]*browsertest.Tab{"caller": caller, "callee": callee} {
		s := stats(tab)
		t.Logf("%s: local %s/%s %s, remote %s/%s %s:%d", name, s.Local.Type, s.Local.Protocol, s.Local.Relay,
			s.Remote.Type, s.Remote.Protocol, s.Remote.Address, s.Remote.Port)
		if s.Local.Type != "relay" || s.Local.Relay != "tls" {
			t.Errorf("%s: selected local candidate %+v, want relay over tls", name, s.Local)
		}
	}
	if n := app.turn.AllocationCount(); n < 2 {
		t.Errorf("%d TURN allocations, want at least 2", n)
	}
}

// TestBrowserOnlyTLSOnOnePort: a network that lets out only TLS to the one
// port (a middlebox passes connections whose first byte starts a TLS
// handshake and nothing else; all UDP dropped). ICE-TCP is on but plain
// TCP cannot pass, so the call goes over TURN over TLS on that port.
func TestBrowserOnlyTLSOnOnePort(t *testing.T) {
	ns := netns.New(t)
	cert, key := writeSelfSigned(t)
	// The app listens on loopback; the middlebox owns the same port on the
	// veth address, so the URLs the app derives from the page's host lead
	// through it.
	app := startApp(t, func(c *Config) {
		c.Addr, c.TURNAddr, c.TURNSecret = "127.0.0.1:0", ":0", "s3cret"
		c.TLSCert, c.TLSKey = cert, key
		c.ICETCP = true
	})
	port := app.ln.Addr().(*net.TCPAddr).Port
	tlsOnlyProxy(t, net.JoinHostPort(ns.HostIP, fmt.Sprint(port)), app.ln.Addr().String())
	ns.OnlyTCPPort(port)
	chromium, err := browsertest.Path()
	if err != nil {
		t.Fatal(err)
	}
	b := browsertest.Launch(t,
		chromedp.ExecPath(ns.Wrapper(chromium)),
		chromedp.Flag("remote-debugging-port", fmt.Sprint(ns.ForwardLoopback())),
		chromedp.Flag("ignore-certificate-errors", true))
	caller, callee := browserCall(t, b, fmt.Sprintf("https://%s/", net.JoinHostPort(ns.HostIP, fmt.Sprint(port))))
	for name, tab := range map[string]*browsertest.Tab{"caller": caller, "callee": callee} {
		s := stats(tab)
		t.Logf("%s: local %s/%s %s, remote %s/%s %s:%d", name, s.Local.Type, s.Local.Protocol, s.Local.Relay,
			s.Remote.Type, s.Remote.Protocol, s.Remote.Address, s.Remote.Port)
		if s.Local.Type != "relay" || s.Local.Relay != "tls" {
			t.Errorf("%s: selected local candidate %+v, want relay over tls", name, s.Local)
		}
	}
}

// tlsOnlyProxy forwards connections from listen to target when their first
// byte is a TLS handshake record (0x16) and closes the others, like a
// firewall that passes only TLS.
func tlsOnlyProxy(t *testing.T, listen, target string) {
	t.Helper()
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		t.Fatal(err)
	}
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
				first := make([]byte, 1)
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(c, first); err != nil || first[0] != 0x16 {
					_ = c.Close()
					return
				}
				_ = c.SetReadDeadline(time.Time{})
				up, err := net.Dial("tcp", target)
				if err != nil {
					_ = c.Close()
					return
				}
				track(up)
				if _, err := up.Write(first); err != nil {
					_ = c.Close()
					_ = up.Close()
					return
				}
				done := make(chan struct{}, 2)
				cp := func(dst, src net.Conn) {
					_, _ = io.Copy(dst, src)
					_ = dst.Close()
					_ = src.Close()
					done <- struct{}{}
				}
				go cp(up, c)
				go cp(c, up)
				<-done
				<-done
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}
