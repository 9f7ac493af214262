package signaling

import (
	"encoding/json"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/pion/webrtc/v4"
)

// client is one WebSocket connection. The HTTP handler goroutine is its
// reader; writePump is its only writer. Everyone else enqueues.
type client struct {
	srv  *Server
	conn *websocket.Conn
	host string // Host the client connected to, for ICE server URLs

	send     chan []byte   // encoded frames; bounded
	quit     chan struct{} // closed to stop: flush, close frame, close
	quitOnce sync.Once
	kill     chan struct{} // closed to drop at once (queue overflow)
	killOnce sync.Once

	// Guarded by srv.mu.
	name  string
	call  *call
	early []webrtc.ICECandidateInit // candidates sent before the call exists
}

// enqueue queues a frame without blocking; a client whose queue is full is
// too slow to keep up and is dropped.
func (c *client) enqueue(frame []byte) {
	select {
	case c.send <- frame:
	default:
		c.killOnce.Do(func() { close(c.kill) })
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
func (c *client) stop() { c.quitOnce.Do(func() { close(c.quit) }) }

// readPump reads frames until the connection fails, then unregisters.
func (c *client) readPump() {
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
			return
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
		case frame := <-c.send:
			if !c.write(websocket.TextMessage, frame) {
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
			c.write(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "server shutting down"))
			return
		}
	}
}

func (c *client) flush() {
	for {
		select {
		case frame := <-c.send:
			if !c.write(websocket.TextMessage, frame) {
				return
			}
		default:
			return
		}
	}
}

func (c *client) write(kind int, data []byte) bool {
	_ = c.conn.SetWriteDeadline(time.Now().Add(c.srv.cfg.WriteTimeout))
	return c.conn.WriteMessage(kind, data) == nil
}
