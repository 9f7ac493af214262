package signaling

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// client is one WebSocket connection. The HTTP handler goroutine is its
// reader; writePump is its only writer. Everyone else enqueues.
type client struct {
	srv    *Server
	conn   *websocket.Conn
	host   string     // Host the client connected to, for ICE server URLs
	ip     netip.Addr // the address the connection caps and call limits count
	remote string     // RemoteAddr, for logs

	send      chan outFrame // encoded frames; bounded
	quit      chan struct{} // closed to stop: flush, close frame, close
	quitOnce  sync.Once
	closeText string        // reason in the close frame; set before quit closes
	closeCode int           // code of the close frame; set before quit closes
	kill      chan struct{} // closed to drop at once (queue overflow)
	readDone  chan struct{} // closed when the reader has returned
	killOnce  sync.Once

	// users is the newest users list not yet written: a new one replaces
	// it (presence is coalesced, never queued). usersReady wakes the writer.
	usersMu    sync.Mutex
	users      []byte
	usersReady chan struct{}

	// authed is set once the connection has logged in or resumed (the
	// login deadline no longer applies).
	authed atomic.Bool

	// Guarded by srv.mu.
	sess *session // the session this connection is attached to, after login or resume
}

func newClient(s *Server, conn *websocket.Conn, r *http.Request, ip netip.Addr) *client {
	return &client{srv: s, conn: conn, host: r.Host, ip: ip, remote: r.RemoteAddr,
		send: make(chan outFrame, s.cfg.SendQueue), usersReady: make(chan struct{}, 1),
		quit: make(chan struct{}), kill: make(chan struct{}), readDone: make(chan struct{})}
}

// setUsers makes frame the users list to write next, replacing one that
// is still pending. It never blocks.
func (c *client) setUsers(frame []byte) {
	c.usersMu.Lock()
	c.users = frame
	c.usersMu.Unlock()
	select {
	case c.usersReady <- struct{}{}:
	default:
	}
}

func (c *client) takeUsers() []byte {
	c.usersMu.Lock()
	defer c.usersMu.Unlock()
	f := c.users
	c.users = nil
	return f
}

// outFrame is one frame, or several that must be written back to back
// (a resume reply and what was queued while the session was detached).
type outFrame struct {
	data  []byte
	batch [][]byte
}

// enqueue queues a frame without blocking; a client whose queue is full is
// too slow to keep up and is dropped.
func (c *client) enqueue(frame []byte) { c.push(outFrame{data: frame}) }

func (c *client) enqueueBatch(frames [][]byte) { c.push(outFrame{batch: frames}) }

func (c *client) push(f outFrame) {
	select {
	case c.send <- f:
	default:
		c.killOnce.Do(func() { c.srv.count.err(ErrSlowClient); close(c.kill) })
	}
}

// killed reports whether the client was dropped for being too slow.
func (c *client) killed() bool {
	select {
	case <-c.kill:
		return true
	default:
		return false
	}
}

func (c *client) sendMsg(m *Message) {
	frame, err := json.Marshal(m)
	if err != nil {
		c.srv.log.Error("encode message", "type", m.Type, "err", err)
		return
	}
	c.srv.count.msgOut(m.Type)
	c.enqueue(frame)
}

func (c *client) sendError(text string) { c.sendMsg(&Message{Type: typeError, Message: text}) }

// stop asks the writer to flush what is queued and close the connection.
func (c *client) stop() { c.stopWith("server shutting down") }

func (c *client) stopWith(text string) { c.closeWith(websocket.CloseGoingAway, text) }

// closeWith is stopWith with a close code (1008 for a policy violation).
func (c *client) closeWith(code int, text string) {
	c.quitOnce.Do(func() { c.closeCode, c.closeText = code, text; close(c.quit) })
}

// errPolicy ends a reader that closed its connection for breaking a limit.
var errPolicy = errors.New("policy violation")

// readPump reads frames until the connection fails and returns the error
// that ended it. A panic while handling a frame is logged with its stack
// and ends this connection only.
func (c *client) readPump() (err error) {
	defer func() {
		if recovered(c.srv.log, recover(), "reader") {
			c.srv.count.err(ErrInternal)
			c.closeWith(websocket.CloseInternalServerErr, "internal error")
			err = errPolicy
		}
	}()
	cfg := &c.srv.cfg
	now := time.Now // deadlines are real time (cfg.now is the limiters' clock)
	loginBy := now().Add(cfg.LoginTimeout)
	// deadline is the read deadline: the pong timeout, but no later than
	// the login deadline until the client has logged in.
	deadline := func() time.Time {
		d := now().Add(cfg.PongTimeout)
		if !c.authed.Load() && loginBy.Before(d) {
			d = loginBy
		}
		return d
	}
	bucket := newTokenBucket(cfg.MessageRate, cfg.MessageBurst, cfg.now())
	c.conn.SetReadLimit(cfg.MaxMessageSize)
	_ = c.conn.SetReadDeadline(deadline())
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(deadline())
	})
	for {
		kind, data, err := c.conn.ReadMessage()
		if errors.Is(err, websocket.ErrReadLimit) {
			c.srv.count.err(ErrTooBig)
			c.discardRest() // gorilla has sent close 1009
		}
		if err != nil {
			if !c.authed.Load() && !now().Before(loginBy) {
				c.srv.count.err(ErrLoginTimeout)
				c.closeWith(websocket.ClosePolicyViolation, "log in or resume within "+cfg.LoginTimeout.String())
				return errPolicy
			}
			return err
		}
		if !bucket.allow(cfg.now()) {
			c.srv.count.err(ErrFlood)
			c.srv.log.Warn("client floods messages, closing", "remote", c.remote)
			c.closeWith(websocket.ClosePolicyViolation, "too many messages")
			c.discardRest() // until the client has read the close frame
			return errPolicy
		}
		if kind != websocket.TextMessage {
			c.srv.count.err(ErrBadMessage)
			c.sendError("only text frames carrying JSON are understood")
		} else {
			c.srv.handle(c, data)
		}
		// Any frame proves the client is alive (set after handling: a
		// login lifts the login deadline).
		_ = c.conn.SetReadDeadline(deadline())
	}
}

// discardRest reads and drops what the client is still sending, briefly,
// so that closing the socket does not reset the connection before the
// client has read the close frame.
func (c *client) discardRest() {
	raw := c.conn.UnderlyingConn()
	_ = raw.SetReadDeadline(time.Now().Add(time.Second))
	_, _ = io.Copy(io.Discard, raw)
}

// writePump owns every write to the connection.
func (c *client) writePump() {
	cfg := &c.srv.cfg
	ping := time.NewTicker(cfg.PingInterval)
	defer func() {
		recovered(c.srv.log, recover(), "writer")
		ping.Stop()
		_ = c.conn.Close()
	}()
	for {
		select {
		case f := <-c.send:
			if !c.writeFrame(f) {
				return
			}
		case <-c.usersReady:
			// What was queued before the list goes first (a login reply
			// precedes the first list).
			if !c.flush() {
				return
			}
			if f := c.takeUsers(); f != nil && !c.write(websocket.TextMessage, f) {
				return
			}
		case <-ping.C:
			if !c.write(websocket.PingMessage, nil) {
				return
			}
		case <-c.kill:
			return
		case <-c.quit:
			c.flush()
			c.write(websocket.CloseMessage, websocket.FormatCloseMessage(c.closeCode, c.closeText))
			// Closing while the client still sends would reset the
			// connection before it reads the close frame: give the reader
			// (which sees the client's close, or drains) a moment.
			t := time.NewTimer(time.Second)
			select {
			case <-c.readDone:
			case <-t.C:
			}
			t.Stop()
			return
		}
	}
}

// flush writes what is queued now; false if a write failed.
func (c *client) flush() bool {
	for {
		select {
		case f := <-c.send:
			if !c.writeFrame(f) {
				return false
			}
		default:
			return true
		}
	}
}

func (c *client) writeFrame(f outFrame) bool {
	if f.data != nil {
		return c.write(websocket.TextMessage, f.data)
	}
	for _, frame := range f.batch {
		if !c.write(websocket.TextMessage, frame) {
			return false
		}
	}
	return true
}

func (c *client) write(kind int, data []byte) bool {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	return c.conn.WriteMessage(kind, data) == nil
}
