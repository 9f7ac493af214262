package portmux

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"time"
)

// tlsKind marks a TLS ClientHello (only returned by classify on a plain stream).
const tlsKind Kind = -1

// maxPeek bounds what classification reads: every decision needs at most
// 10 bytes, but a read may return more, which is kept and replayed.
const maxPeek = 4096

var stunCookie = []byte{0x21, 0x12, 0xA4, 0x42}

// httpMethods start an HTTP/1.x request line.
var httpMethods = []string{"GET ", "POST ", "HEAD ", "PUT ", "DELETE ", "OPTIONS ", "PATCH ", "CONNECT ", "TRACE "}

// classifyBytes decides what b (the first bytes of a stream) is. It returns
// more=true when it needs more bytes, ok=false for garbage. Inside TLS
// (inner) only HTTP and STUN are valid.
func classifyBytes(b []byte, inner bool) (k Kind, more, ok bool) {
	if len(b) == 0 {
		return 0, true, true
	}
	switch c := b[0]; {
	case c == 0x16 && !inner: // TLS handshake record: 0x16 0x03 0x0[0-4]
		if len(b) < 3 {
			return 0, len(b) < 2 || b[1] == 3, len(b) < 2 || b[1] == 3
		}
		return tlsKind, false, b[1] == 3 && b[2] <= 4
	case c >= 'A' && c <= 'Z':
		prefix := false
		for _, m := range httpMethods {
			if bytes.HasPrefix(b, []byte(m)) {
				return httpKind(inner), false, true
			}
			if len(b) < len(m) && m[:len(b)] == string(b) {
				prefix = true
			}
		}
		return 0, prefix, prefix
	case c&0xC0 == 0: // STUN message type, or the high byte of a 4571 length
		if len(b) < 8 {
			return 0, true, true
		}
		if bytes.Equal(b[4:8], stunCookie) {
			return stunKind(inner), false, true
		}
		if inner {
			return 0, false, false
		}
		if len(b) < 10 {
			return 0, true, true
		}
		// RFC 4571: 2-byte length, then a STUN header whose length
		// (bytes 4-5) leaves room for the frame.
		frame := int(binary.BigEndian.Uint16(b[0:2]))
		stunLen := int(binary.BigEndian.Uint16(b[4:6]))
		if b[2]&0xC0 == 0 && bytes.Equal(b[6:10], stunCookie) && frame == stunLen+20 {
			return ICETCP, false, true
		}
	}
	return 0, false, false
}

func httpKind(inner bool) Kind {
	if inner {
		return HTTPS
	}
	return HTTP
}

func stunKind(inner bool) Kind {
	if inner {
		return STUNTLS
	}
	return STUN
}

// peek reads from c until its kind is known and returns c with what was
// read put back in front. Deadlines are the caller's.
func peek(c net.Conn, inner bool) (net.Conn, Kind, error) {
	buf := make([]byte, 0, 64)
	tmp := make([]byte, 64)
	for {
		k, more, ok := classifyBytes(buf, inner)
		if !ok {
			return nil, 0, errGarbage
		}
		if !more {
			return &peekedConn{Conn: c, buf: buf}, k, nil
		}
		if len(buf) >= maxPeek {
			return nil, 0, errGarbage
		}
		n, err := c.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if err != nil && n == 0 {
			return nil, 0, err
		}
	}
}

// peekedConn replays buf before reading from Conn.
type peekedConn struct {
	net.Conn
	buf []byte
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(c.buf) > 0 {
		n := copy(p, c.buf)
		c.buf = c.buf[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

func contextWithDeadline(d time.Time) (context.Context, context.CancelFunc) {
	return context.WithDeadline(context.Background(), d)
}
