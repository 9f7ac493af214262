package turn

import (
	"net"

	"github.com/pion/stun/v3"
)

// quotaReason is the reason phrase of a refused allocation. pion/turn
// v4.1.4 answers one (its QuotaHandler said no) with error 486 and an
// empty reason phrase, and its QuotaHandler can only say yes or no; a
// client's log then shows a bare number. The wrappers below add the
// phrase RFC 8656 gives the code on the way out.
var quotaReason = []byte("Allocation Quota Reached")

// withReason returns p, or, when p is an Allocate error response 486
// without a reason phrase (and without integrity, which a rewrite would
// break: pion's has none), the same response with one.
func withReason(p []byte) []byte {
	// A STUN header is 20 bytes; Allocate error response is 0x0113.
	if len(p) < 20 || p[0] != 0x01 || p[1] != 0x13 {
		return p
	}
	var m stun.Message
	if err := stun.Decode(p, &m); err != nil {
		return p
	}
	var code stun.ErrorCodeAttribute
	if code.GetFrom(&m) != nil || code.Code != stun.CodeAllocQuotaReached || len(code.Reason) > 0 ||
		m.Contains(stun.AttrMessageIntegrity) || m.Contains(stun.AttrFingerprint) {
		return p
	}
	out := &stun.Message{TransactionID: m.TransactionID}
	out.WriteHeader()
	out.SetType(m.Type)
	for _, a := range m.Attributes {
		if a.Type != stun.AttrErrorCode {
			out.Add(a.Type, a.Value)
		}
	}
	if (&stun.ErrorCodeAttribute{Code: code.Code, Reason: quotaReason}).AddTo(out) != nil {
		return p
	}
	return out.Raw
}

// reasonPacketConn adds the reason phrase to what pion sends over UDP.
type reasonPacketConn struct{ net.PacketConn }

func (c reasonPacketConn) WriteTo(p []byte, addr net.Addr) (int, error) {
	q := withReason(p)
	if _, err := c.PacketConn.WriteTo(q, addr); err != nil {
		return 0, err
	}
	return len(p), nil
}

// reasonListener adds it on TCP and TLS connections (one STUN message per
// Write, as pion writes them).
type reasonListener struct{ net.Listener }

func (l reasonListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return reasonConn{c}, nil
}

type reasonConn struct{ net.Conn }

func (c reasonConn) Write(p []byte) (int, error) {
	if _, err := c.Conn.Write(withReason(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}
