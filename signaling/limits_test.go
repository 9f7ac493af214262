package signaling

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestTokenBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	b := newTokenBucket(10, 5, t0) // 10/s, burst 5
	for i := range 5 {
		if !b.allow(t0) {
			t.Fatalf("burst frame %d refused", i)
		}
	}
	if b.allow(t0) {
		t.Fatal("6th frame at once allowed")
	}
	if b.allow(t0.Add(50 * time.Millisecond)) {
		t.Fatal("allowed after half a token")
	}
	if !b.allow(t0.Add(100 * time.Millisecond)) {
		t.Fatal("refused after one token's time")
	}
	// A long pause refills to the burst, not beyond.
	t1 := t0.Add(time.Hour)
	n := 0
	for b.allow(t1) {
		n++
	}
	if n != 5 {
		t.Fatalf("after a pause %d frames allowed, want 5", n)
	}
	// Steady 10/s passes forever; 11/s does not.
	ok := true
	for i := range 100 {
		ok = ok && b.allow(t1.Add(time.Duration(i+1)*100*time.Millisecond))
	}
	if !ok {
		t.Fatal("steady rate refused")
	}
	b = newTokenBucket(10, 5, t0)
	refused := false
	for i := range 100 {
		if !b.allow(t0.Add(time.Duration(i) * 90 * time.Millisecond)) {
			refused = true
		}
	}
	if !refused {
		t.Fatal("a rate above the limit was never refused")
	}
}

func TestAttemptLimiter(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := newAttemptLimiter(5, 30*time.Second)
	for i := range 5 {
		if ok, _ := l.allow("mallory", t0.Add(time.Duration(i)*time.Second)); !ok {
			t.Fatalf("attempt %d refused", i)
		}
	}
	ok, wait := l.allow("mallory", t0.Add(10*time.Second))
	if ok || wait != 20*time.Second {
		t.Fatalf("6th attempt: ok=%v wait=%v, want refused, 20 s", ok, wait)
	}
	if ok, _ := l.allow("alice", t0.Add(10*time.Second)); !ok {
		t.Fatal("another caller is limited too")
	}
	if ok, _ := l.allow("mallory", t0.Add(30*time.Second)); !ok {
		t.Fatal("refused after the first attempt left the window")
	}
	if ok, _ := l.allow("mallory", t0.Add(30*time.Second)); ok {
		t.Fatal("allowed a second attempt when only one left the window")
	}
	// Idle keys are forgotten.
	l.allow("bob", t0.Add(2*time.Minute))
	if len(l.log) != 1 {
		t.Fatalf("%d keys kept, want 1", len(l.log))
	}
}

func TestRecentSet(t *testing.T) {
	t0 := time.Unix(1000, 0)
	r := recentSet{ttl: time.Minute}
	r.add("a", t0)
	if !r.has("a", t0.Add(59*time.Second)) || r.has("a", t0.Add(time.Minute)) || r.has("b", t0) {
		t.Fatal("recentSet membership wrong")
	}
	r.add("b", t0.Add(2*time.Minute))
	if len(r.at) != 1 {
		t.Fatalf("%d keys kept, want 1", len(r.at))
	}
}

func TestUsersFrameIsCapped(t *testing.T) {
	var m Message
	if err := json.Unmarshal(usersFrame([]string{"c", "a", "b\"<"}, 2), &m); err != nil {
		t.Fatal(err)
	}
	if m.Type != typeUsers || len(m.Users) != 2 || m.Users[0] != "a" || m.Users[1] != "b\"<" || m.Total != 3 {
		t.Fatalf("%+v", m)
	}
	if err := json.Unmarshal(usersFrame(nil, 2), &m); err != nil || len(m.Users) != 0 || m.Total != 0 {
		t.Fatalf("empty: %+v %v", m, err)
	}
}

func TestClientIP(t *testing.T) {
	s := &Server{}
	r := &http.Request{RemoteAddr: "10.0.0.1:5000", Header: http.Header{"X-Forwarded-For": {"1.2.3.4"}}}
	if got := s.clientIP(r); got.String() != "10.0.0.1" {
		t.Fatalf("untrusted proxy: %v", got)
	}
	s.cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	r.Header = http.Header{"X-Forwarded-For": {"6.6.6.6, 1.2.3.4", "10.0.0.2"}}
	if got := s.clientIP(r); got.String() != "1.2.3.4" {
		t.Fatalf("trusted proxy: %v", got)
	}
	r.Header = http.Header{}
	if got := s.clientIP(r); got.String() != "10.0.0.1" {
		t.Fatalf("no header: %v", got)
	}
	if got := remoteIP("[::ffff:1.2.3.4]:9"); got.String() != "1.2.3.4" {
		t.Fatalf("mapped: %v", got)
	}
}

func TestPendingUsersListIsReplaced(t *testing.T) {
	c := fakeClient()
	c.setUsers([]byte("u1"))
	c.setUsers([]byte("u2"))
	if got := string(c.takeUsers()); got != "u2" {
		t.Fatalf("pending list %q, want the newest", got)
	}
	if c.takeUsers() != nil || len(c.send) != 0 {
		t.Fatal("a users list was queued")
	}
}

func TestPresenceIsCoalesced(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.PresenceInterval = 300 * time.Millisecond })
	w := e.login("watcher")
	w.waitUsers("watcher")
	want := []string{"watcher"}
	start := time.Now()
	for i := range 40 {
		name := fmt.Sprintf("u%02d", i)
		e.login(name)
		want = append(want, name)
	}
	slices.Sort(want)
	frames := 0
	for {
		m := w.nextAny()
		if m.Type != typeUsers {
			continue
		}
		frames++
		if strings.Join(m.Users, ",") == strings.Join(want, ",") {
			if m.Total != 41 {
				t.Fatalf("total %d", m.Total)
			}
			break
		}
	}
	// At most one list per interval while the logins went on.
	if limit := 2 + int(time.Since(start)/(300*time.Millisecond)); frames > limit {
		t.Fatalf("%d lists for 40 logins", frames)
	}
	t.Logf("%d lists for 40 logins", frames)
}
