package signaling

import (
	"encoding/json"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// client is one WebSocket connection. The HTTP handler goroutine is its
// reader; writePump is its only writer. Everyone else enqueues.
type client struct {
	srv  *Server
	conn *websocket.Conn
	host string // Host the client connected to, for ICE server URLs

	send      chan outFrame // encoded frames; bounded
	quit      chan struct{} // closed to stop: flush, close frame, close
	quitOnce  sync.Once
	closeText string        // reason in the close frame; set before quit closes
	kill      chan struct{} // closed to drop at once (queue overflow)
	killOnce  sync.Once

	// Guarded by srv.mu.
	sess *session // the session this connection is attached to, after login or resume
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
		c.killOnce.Do(func() { close(c.kill) })
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
	c.enqueue(frame)
}

func (c *client) sendError(text string) { c.sendMsg(&Message{Type: typeError, Message: text}) }

// stop asks the writer to flush what is queued and close the connection.
func (c *client) stop() { c.stopWith("server shutting down") }

func (c *client) stopWith(text string) {
	c.quitOnce.Do(func() { c.closeText = text; close(c.quit) })
}

// readPump reads frames until the connection fails and returns the error
// that ended it.
func (c *client) readPump() error {
	cfg := &c.srv.cfg
	c.conn.SetReadLimit(cfg.MaxMessageSize)
	_ = c.conn.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
	c.conn.SetPongHandler(func(string) error {
		return c.conn.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
	})
	for {
		kind, data, err := c.conn.ReadMessage()
		if errors.Is(err, websocket.ErrReadLimit) {
			c.discardRest() // gorilla has sent close 1009
		}
		if err != nil {
			return err
		}
		// Any frame proves the client is alive.
		_ = c.conn.SetReadDeadline(time.Now().Add(cfg.PongTimeout))
		if kind != websocket.TextMessage {
			c.sendError("only text frames carrying JSON are understood")
			continue
		}
		c.srv.handle(c, data)
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
		ping.Stop()
		_ = c.conn.Close()
	}()
	for {
		select {
		case f := <-c.send:
			if !c.writeFrame(f) {
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
			c.write(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, c.closeText))
			return
		}
	}
}

func (c *client) flush() {
	for {
		select {
		case f := <-c.send:
			if !c.writeFrame(f) {
				return
			}
		default:
			return
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
