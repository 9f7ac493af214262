package signaling

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// stormClient is a bare protocol client that only logs in and counts the
// users traffic it receives.
type stormClient struct {
	ws          *websocket.Conn
	usersBytes  atomic.Int64
	usersFrames atomic.Int64
	total       atomic.Int64 // "total" of the last users list
	loggedIn    chan bool
	done        chan struct{} // closed when the connection ends
	err         error         // what ended it (after done)
}

var usersPrefix = []byte(`{"type":"users"`)

func (e *env) stormDial(dialer *websocket.Dialer, name string) (*stormClient, error) {
	url := "ws" + strings.TrimPrefix(e.http.URL, "http") + "/ws"
	ws, _, err := dialer.Dial(url, nil)
	if err != nil {
		return nil, err
	}
	c := &stormClient{ws: ws, loggedIn: make(chan bool, 1), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				c.err = err
				return
			}
			if bytes.HasPrefix(data, usersPrefix) {
				c.usersBytes.Add(int64(len(data)))
				c.usersFrames.Add(1)
				c.total.Store(usersTotal(data))
				continue
			}
			var m Message
			if json.Unmarshal(data, &m) == nil && m.Type == typeLogin {
				c.loggedIn <- m.Success != nil && *m.Success
			}
		}
	}()
	if err := ws.WriteJSON(map[string]string{"type": "login", "name": name}); err != nil {
		_ = ws.Close()
		<-c.done
		return nil, err
	}
	select {
	case ok := <-c.loggedIn:
		if !ok {
			_ = ws.Close()
			<-c.done
			return nil, fmt.Errorf("login %s refused", name)
		}
	case <-c.done:
		return nil, fmt.Errorf("login %s: %v", name, c.err)
	case <-time.After(30 * time.Second):
		_ = ws.Close()
		<-c.done
		return nil, fmt.Errorf("login %s: no reply", name)
	}
	return c, nil
}

// vanish cuts the connection with a reset, no close frame.
func (c *stormClient) vanish() {
	if tc, ok := c.ws.UnderlyingConn().(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.ws.UnderlyingConn().Close()
}

func (c *stormClient) alive() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

func stormEnv(t *testing.T) *env {
	return newEnv(t, func(c *Config) {
		c.MaxConnsPerIP = 100000 // every test client comes from 127.0.0.1
		c.ResumeGrace = 500 * time.Millisecond
	})
}

// stormUsersBound is the users traffic a client may receive during the
// storm: at most 4 lists per second while the listed names change, one per
// 2 s while only the total does, each of at most 100 names. Before
// coalescing, each client received 4.5 MB.
const stormUsersBound = 100 << 10

// TestStormLoginAndVanish: 1,000 clients log in within ~2 s beside a
// healthy pair and an observer, then all vanish at once. Every login
// succeeds, nobody else is dropped, and users traffic stays bounded.
func TestStormLoginAndVanish(t *testing.T) {
	const n = 1000
	e := stormEnv(t)
	h := e.startHealthy()
	obs, err := e.stormDial(websocket.DefaultDialer, "observer")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	clients := make([]*stormClient, n)
	var failed atomic.Int64
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
				c, err := e.stormDial(websocket.DefaultDialer, fmt.Sprintf("storm-%04d", i))
				if err != nil {
					failed.Add(1)
					t.Error(err)
					continue
				}
				clients[i] = c
			}
		}()
	}
	wg.Wait()
	loginTime := time.Since(start)
	if failed.Load() > 0 {
		t.Fatalf("%d of %d logins failed", failed.Load(), n)
	}
	waitForWithin(t, 30*time.Second, func() bool { return obs.total.Load() == n+3 })
	t.Logf("RSS of the test process (server and 1,000 clients, several times more under -race) with all online: %s", vmRSS())
	vanishAt := time.Now()
	for _, c := range clients {
		c.vanish()
	}
	waitForWithin(t, 30*time.Second, func() bool { return obs.total.Load() == 3 })
	vanishTime := time.Since(vanishAt)
	for _, c := range clients {
		<-c.done
	}
	var maxBytes, sum int64
	for _, c := range clients {
		maxBytes = max(maxBytes, c.usersBytes.Load())
		sum += c.usersBytes.Load()
	}
	t.Logf("%d logins in %v; gone from the list %v after vanishing", n, loginTime.Round(time.Millisecond), vanishTime.Round(time.Millisecond))
	t.Logf("users traffic: observer %d B in %d lists; storm clients max %d B, mean %d B",
		obs.usersBytes.Load(), obs.usersFrames.Load(), maxBytes, sum/n)
	if !obs.alive() {
		t.Fatalf("observer dropped: %v", obs.err)
	}
	if b := obs.usersBytes.Load(); b > stormUsersBound || maxBytes > stormUsersBound {
		t.Fatalf("users traffic observer %d B, storm max %d B; bound %d B", b, maxBytes, stormUsersBound)
	}
	h.check(t)
	_ = obs.ws.Close()
	<-obs.done
}

// slowConn reads at most rate bytes per second.
type slowConn struct {
	net.Conn
	rate  float64
	start time.Time
	n     int64
}

func (c *slowConn) Read(p []byte) (int, error) {
	if len(p) > 4096 {
		p = p[:4096]
	}
	n, err := c.Conn.Read(p)
	c.n += int64(n)
	if ahead := time.Duration(float64(c.n)/c.rate*float64(time.Second)) - time.Since(c.start); ahead > 0 {
		time.Sleep(ahead)
	}
	return n, err
}

// TestStormChurnSlowReaders: 300 users who read at 250 KB/s stay online
// while four loops log in and reset connections for ~8 s.
func TestStormChurnSlowReaders(t *testing.T) {
	const users, loops = 300, 4
	churnFor := 8 * time.Second
	e := stormEnv(t)
	h := e.startHealthy()
	slow := &websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &slowConn{Conn: c, rate: 250 << 10, start: time.Now()}, nil
	}}
	readers := make([]*stormClient, users)
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < users; i = int(next.Add(1)) - 1 {
				c, err := e.stormDial(slow, fmt.Sprintf("reader-%03d", i))
				if err != nil {
					t.Error(err)
					continue
				}
				readers[i] = c
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	stop := time.Now().Add(churnFor)
	var churned atomic.Int64
	for l := range loops {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				c, err := e.stormDial(websocket.DefaultDialer, fmt.Sprintf("churn-%d-%d", l, i))
				if err != nil {
					t.Error(err)
					return
				}
				c.vanish()
				<-c.done
				churned.Add(1)
			}
		}()
	}
	wg.Wait()
	dropped := 0
	var maxBytes int64
	for _, c := range readers {
		if !c.alive() {
			dropped++
		}
		maxBytes = max(maxBytes, c.usersBytes.Load())
	}
	t.Logf("%d churn logins/resets in %v; slow readers got at most %d B of users lists (%.0f B/s)",
		churned.Load(), churnFor, maxBytes, float64(maxBytes)/churnFor.Seconds())
	if dropped > 0 {
		t.Fatalf("%d of %d slow readers dropped", dropped, users)
	}
	h.check(t)
	for _, c := range readers {
		_ = c.ws.Close()
		<-c.done
	}
}

// usersTotal reads "total" from a users frame without decoding the list
// (decoding every list of 1,000 clients dominates the test's CPU).
func usersTotal(frame []byte) int64 {
	i := bytes.LastIndex(frame, []byte(`"total":`))
	if i < 0 {
		return -1
	}
	n, err := strconv.ParseInt(string(bytes.TrimRight(frame[i+len(`"total":`):], "}")), 10, 64)
	if err != nil {
		return -1
	}
	return n
}

func vmRSS() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmRSS:"))
		}
	}
	return "unknown"
}
