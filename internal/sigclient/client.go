// Package sigclient is a signaling client that speaks the server's real
// protocol (PROTOCOL.md) over a WebSocket for a pion PeerConnection the
// caller owns: it logs in, sends offers, answers the server's offers and
// trades ICE candidates. It knows nothing of testing, so the load
// generator (cmd/loadtest) and tests can share it.
package sigclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"

	"videochat/signaling"
)

// Options configures Dial.
type Options struct {
	// LocalAddr, when set, is the source address of the WebSocket's TCP
	// connection (e.g. one of many 127.x addresses, so that per-address
	// limits of a local server count each client apart).
	LocalAddr *net.TCPAddr
	Timeout   time.Duration // dial and login; default 10 s
}

// Client is one logged-in WebSocket connection.
type Client struct {
	Name       string
	ICEServers []webrtc.ICEServer // from the login reply
	Session    string

	ws   *websocket.Conn
	wmu  sync.Mutex
	msgs chan signaling.Message
	done chan struct{}

	mu      sync.Mutex
	pc      *webrtc.PeerConnection
	pending []webrtc.ICECandidateInit
	errs    []error
}

// Dial connects to the WebSocket URL and logs in as name.
func Dial(ctx context.Context, url, name string, o Options) (*Client, error) {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	d := websocket.Dialer{HandshakeTimeout: o.Timeout}
	if o.LocalAddr != nil {
		nd := &net.Dialer{LocalAddr: o.LocalAddr, Timeout: o.Timeout}
		d.NetDialContext = nd.DialContext
	}
	ws, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", url, err)
	}
	c := &Client{Name: name, ws: ws, msgs: make(chan signaling.Message, 64), done: make(chan struct{})}
	_ = ws.SetReadDeadline(time.Now().Add(o.Timeout))
	if err := c.Send(signaling.Message{Type: "login", Name: name}); err != nil {
		_ = ws.Close()
		return nil, err
	}
	var reply signaling.Message
	if err := ws.ReadJSON(&reply); err != nil {
		_ = ws.Close()
		return nil, fmt.Errorf("login %s: %w", name, err)
	}
	if reply.Type != "login" || reply.Success == nil || !*reply.Success {
		_ = ws.Close()
		return nil, fmt.Errorf("login %s refused: %s", name, reply.Message)
	}
	_ = ws.SetReadDeadline(time.Time{})
	c.Session = reply.Session
	for _, s := range reply.ICEServers {
		c.ICEServers = append(c.ICEServers, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	go c.readLoop()
	return c, nil
}

// Attach makes the client drive pc: the server's offers are answered on it,
// candidates flow both ways. Call it before Call or before being called.
func (c *Client) Attach(pc *webrtc.PeerConnection) {
	c.mu.Lock()
	c.pc = pc
	c.mu.Unlock()
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand != nil {
			init := cand.ToJSON()
			_ = c.Send(signaling.Message{Type: "candidate", Candidate: &init})
		}
	})
}

// Messages delivers every message but SDP, candidates and user lists; it
// is closed when the connection ends. Messages that find it full are
// dropped.
func (c *Client) Messages() <-chan signaling.Message { return c.msgs }

// Err returns what went wrong handling the server's messages, if anything.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return errors.Join(c.errs...)
}

// Send writes one message.
func (c *Client) Send(m signaling.Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_ = c.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return c.ws.WriteJSON(m)
}

// Call offers a call to name on the attached PeerConnection.
func (c *Client) Call(name string) error {
	pc := c.peer()
	if pc == nil {
		return errors.New("sigclient: no PeerConnection attached")
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		return err
	}
	if err := pc.SetLocalDescription(offer); err != nil {
		return err
	}
	return c.Send(signaling.Message{Type: "offer", Name: name, Offer: &offer})
}

// Expect waits for the next message of type typ; an error or leave on the
// way, the connection ending or the timeout fail it.
func (c *Client) Expect(typ string, timeout time.Duration) (signaling.Message, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case m, ok := <-c.msgs:
			if !ok {
				return m, fmt.Errorf("%s: connection closed waiting for %s", c.Name, typ)
			}
			if m.Type == typ {
				return m, nil
			}
			if m.Type == "error" || m.Type == "leave" {
				return m, fmt.Errorf("%s: got %s %q %q waiting for %s", c.Name, m.Type, m.Message, m.Reason, typ)
			}
		case <-t.C:
			return signaling.Message{}, fmt.Errorf("%s: no %s within %v", c.Name, typ, timeout)
		}
	}
}

// Close closes the WebSocket (with a close frame) and waits for the
// reader. It does not close the PeerConnection.
func (c *Client) Close() {
	c.wmu.Lock()
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	c.wmu.Unlock()
	_ = c.ws.Close()
	<-c.done
}

func (c *Client) peer() *webrtc.PeerConnection {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pc
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	c.errs = append(c.errs, err)
	c.mu.Unlock()
}

func (c *Client) readLoop() {
	defer close(c.done)
	defer close(c.msgs)
	for {
		var m signaling.Message
		if err := c.ws.ReadJSON(&m); err != nil {
			return
		}
		switch m.Type {
		case "answer":
			if m.Answer != nil {
				c.setRemote(*m.Answer)
			}
		case "offer":
			if m.Offer != nil {
				c.answer(m)
			}
		case "candidate":
			if m.Candidate != nil {
				c.addCandidate(*m.Candidate)
			}
		}
		if m.Type != "candidate" && m.Type != "users" {
			select {
			case c.msgs <- m:
			default:
			}
		}
	}
}

func (c *Client) answer(m signaling.Message) {
	pc := c.peer()
	if pc == nil {
		c.fail(fmt.Errorf("%s: offer before a PeerConnection was attached", c.Name))
		return
	}
	if !c.setRemote(*m.Offer) {
		return
	}
	answer, err := pc.CreateAnswer(nil)
	if err == nil {
		err = pc.SetLocalDescription(answer)
	}
	if err != nil {
		c.fail(fmt.Errorf("%s: answering: %w", c.Name, err))
		return
	}
	_ = c.Send(signaling.Message{Type: "answer", Name: m.Name, Answer: &answer})
}

func (c *Client) setRemote(d webrtc.SessionDescription) bool {
	pc := c.peer()
	if pc == nil {
		return false
	}
	if err := pc.SetRemoteDescription(d); err != nil {
		c.fail(fmt.Errorf("%s: remote %s: %w", c.Name, d.Type, err))
		return false
	}
	c.mu.Lock()
	pending := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, cand := range pending {
		c.addCandidate(cand)
	}
	return true
}

func (c *Client) addCandidate(cand webrtc.ICECandidateInit) {
	pc := c.peer()
	c.mu.Lock()
	if pc == nil || pc.RemoteDescription() == nil {
		c.pending = append(c.pending, cand)
		c.mu.Unlock()
		return
	}
	c.mu.Unlock()
	if err := pc.AddICECandidate(cand); err != nil {
		c.fail(fmt.Errorf("%s: candidate %q: %w", c.Name, cand.Candidate, err))
	}
}
