package signaling

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test")

// fakeNow is a settable clock for token expiry.
type fakeNow struct {
	mu sync.Mutex
	t  time.Time
}

func (f *fakeNow) now() time.Time { f.mu.Lock(); defer f.mu.Unlock(); return f.t }
func (f *fakeNow) add(d time.Duration) {
	f.mu.Lock()
	f.t = f.t.Add(d)
	f.mu.Unlock()
}

var authEpoch = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// newAuthEnv starts a server with access control on and a fake clock.
func newAuthEnv(t *testing.T, mod func(*Config)) (*env, *fakeNow) {
	clock := &fakeNow{t: authEpoch}
	e := newEnv(t, func(c *Config) {
		c.AuthSecret = testSecret
		c.authNow = clock.now
		if mod != nil {
			mod(c)
		}
	})
	return e, clock
}

func sign(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// tokenFor is a valid token for name, an hour long from the fake epoch.
func tokenFor(t *testing.T, name string) string {
	return sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": name, "exp": authEpoch.Add(time.Hour).Unix()})
}

// withHeader signs payload with HMAC-SHA256 and testSecret under any
// header: the signature is right, only the header lies.
func withHeader(t *testing.T, header string, claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	signing := enc([]byte(header)) + "." + enc([]byte(claims))
	mac := hmac.New(sha256.New, testSecret)
	mac.Write([]byte(signing))
	return signing + "." + enc(mac.Sum(nil))
}

// authLogin sends a login with token and returns the reply.
func (c *conn) authLogin(name, token string) Message {
	c.t.Helper()
	m := map[string]any{"type": "login", "name": name}
	if token != "" {
		m["token"] = token
	}
	c.send(m)
	return c.expect(typeLogin)
}

func (c *conn) loginRefused(name, token, want string) {
	c.t.Helper()
	m := c.authLogin(name, token)
	if m.Success == nil || *m.Success || len(m.ICEServers) != 0 || m.Session != "" {
		c.t.Fatalf("login %q with %.20q...: %+v, want a refusal", name, token, m)
	}
	if !strings.Contains(m.Message, want) {
		c.t.Fatalf("refusal %q does not mention %q", m.Message, want)
	}
}

func TestAuthValidTokenLogsIn(t *testing.T) {
	e, _ := newAuthEnv(t, nil)
	c := e.dial(nil)
	m := c.authLogin("  alice ", tokenFor(t, "alice")) // the cleaned name is compared
	if m.Success == nil || !*m.Success || m.Session == "" || len(m.ICEServers) != 1 || m.ICEServers[0].Username != "u-alice" {
		t.Fatalf("login reply %+v", m)
	}
	c.waitUsers("alice")
	// A second login on the connection is an error, as without auth.
	c.send(map[string]any{"type": "login", "name": "bob", "token": tokenFor(t, "bob")})
	c.expectError("already logged in")
}

func TestAuthRefusesBadTokens(t *testing.T) {
	e, _ := newAuthEnv(t, nil)
	hour := authEpoch.Add(time.Hour).Unix()
	cases := []struct {
		name, token, want string
	}{
		{"missing", "", "requires a sign-in token"},
		{"malformed", "not-a-jwt", "malformed"},
		{"garbage segments", "a.b.c", "malformed"},
		{"expired", sign(t, jwt.SigningMethodHS256, testSecret,
			jwt.MapClaims{"sub": "alice", "exp": authEpoch.Add(-time.Minute).Unix()}), "expired"},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, testSecret,
			jwt.MapClaims{"sub": "alice", "exp": hour, "nbf": authEpoch.Add(10 * time.Minute).Unix()}), "not valid yet"},
		{"no exp", sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice"}), `"exp"`},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another secret, just as long as the real one"),
			jwt.MapClaims{"sub": "alice", "exp": hour}), "signature"},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType,
			jwt.MapClaims{"sub": "alice", "exp": hour}), "signature"},
		{"HS512 with the right secret", sign(t, jwt.SigningMethodHS512, testSecret,
			jwt.MapClaims{"sub": "alice", "exp": hour}), "signature"},
		{"RS256 header", withHeader(t, `{"alg":"RS256","typ":"JWT"}`,
			`{"sub":"alice","exp":`+jsonInt(hour)+`}`), "signature"},
		{"wrong sub", tokenFor(t, "bob"), `not for the name "alice"`},
		{"sub differs by case", tokenFor(t, "Alice"), "not for the name"},
		{"no sub", sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"exp": hour}), "not for the name"},
		{"sub not a string", sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": 7, "exp": hour}), "malformed"},
		{"too long", strings.Repeat("a", maxTokenLen+1), "too long"},
	}
	c := e.dial(nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			c.loginRefused("alice", tc.token, tc.want)
		})
	}
	c.t = t
	// Each refusal left the connection usable: it still logs in.
	if m := c.authLogin("alice", tokenFor(t, "alice")); !*m.Success {
		t.Fatalf("login after refusals: %+v", m)
	}
	// A sanity check of the helper: the same header trick with HS256 passes.
	d := e.dial(nil)
	if m := d.authLogin("bob", withHeader(t, `{"alg":"HS256","typ":"JWT"}`, `{"sub":"bob","exp":`+jsonInt(hour)+`}`)); !*m.Success {
		t.Fatalf("hand-made HS256 token refused: %+v", m)
	}
}

func jsonInt(n int64) string { return strconv.FormatInt(n, 10) }

func TestAuthExpiryUsesLeeway(t *testing.T) {
	e, clock := newAuthEnv(t, nil)
	tok := sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "alice", "exp": authEpoch.Add(time.Minute).Unix()})
	clock.add(time.Minute + 10*time.Second) // expired 10 s ago: within the leeway
	if m := e.dial(nil).authLogin("alice", tok); !*m.Success {
		t.Fatalf("token within the leeway refused: %+v", m)
	}
	clock.add(time.Minute) // now well past it
	e.dial(nil).loginRefused("alice", tok, "expired")
}

func TestAuthOffTutorialLoginWorks(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial(nil)
	c.send(`{"type":"login","name":"alice"}`)
	if m := c.expect(typeLogin); !*m.Success || len(m.ICEServers) != 1 {
		t.Fatalf("tutorial login: %+v", m)
	}
	// A token is ignored when auth is off, even a bad one.
	d := e.dial(nil)
	if m := d.authLogin("bob", "not-a-jwt"); !*m.Success {
		t.Fatalf("login with an ignored token: %+v", m)
	}
}

func TestAuthNothingReachesUnauthenticated(t *testing.T) {
	e, _ := newAuthEnv(t, nil)
	alice := e.dial(nil)
	if m := alice.authLogin("alice", tokenFor(t, "alice")); !*m.Success {
		t.Fatal(m)
	}
	stranger := e.dial(nil)
	// A taken name without a token: the refusal is about the token, not
	// about the name (which would tell the stranger who is online).
	stranger.loginRefused("alice", "", "requires a sign-in token")
	stranger.loginRefused("alice", tokenFor(t, "bob"), "not for the name")
	stranger.send(offerMsg("alice", "v=0"))
	stranger.expectError("log in first")
	stranger.send(map[string]any{"type": "candidate", "candidate": map[string]any{"candidate": "x"}})
	stranger.expectError("log in first")
	stranger.send(map[string]any{"type": "leave", "name": "alice"})
	stranger.expectError("log in first")
	// Presence changes while the stranger is connected reach the logged-in only.
	bob := e.dial(nil)
	if m := bob.authLogin("bob", tokenFor(t, "bob")); !*m.Success {
		t.Fatal(m)
	}
	alice.waitUsers("alice", "bob")
	bob.closeFrame()
	alice.waitUsers("alice")
	stranger.send(`{"type":"ping"}`)
	for {
		m := stranger.nextAny()
		if m.Type == typePong {
			break // everything sent before the pong has arrived
		}
		t.Fatalf("unauthenticated connection got %+v", m)
	}
	e.media.mu.Lock()
	defer e.media.mu.Unlock()
	if len(e.media.calls) != 0 {
		t.Fatal("a call was started")
	}
}

func TestAuthResumeAfterAuthenticatedLogin(t *testing.T) {
	e, clock := newAuthEnv(t, nil)
	alice := e.dial(nil)
	m := alice.authLogin("alice", tokenFor(t, "alice"))
	if !*m.Success {
		t.Fatal(m)
	}
	alice.drop()
	e.waitDetached("alice")
	clock.add(2 * time.Hour) // the JWT has expired; the session has not
	c, reply := e.resume(m.Session)
	if reply.Type != typeResume || reply.Success == nil || !*reply.Success || reply.Name != "alice" ||
		len(reply.ICEServers) != 1 || reply.Session == "" {
		t.Fatalf("resume reply %+v", reply)
	}
	c.send(`{"type":"ping"}`)
	c.expect(typePong)
	// A made-up session token proves nothing.
	d := e.dial(nil)
	d.send(map[string]any{"type": "resume", "session": "made-up"})
	d.expectResumeFailed()
}

func TestAuthenticatorDirect(t *testing.T) {
	if newAuthenticator(nil, nil) != nil {
		t.Fatal("an empty secret must turn auth off")
	}
	now := authEpoch
	a := newAuthenticator(testSecret, func() time.Time { return now })
	if err := a.verify(tokenFor(t, "alice"), "alice"); err != nil {
		t.Fatal(err)
	}
	// The error carries the library's detail for the log.
	err := a.verify(tokenFor(t, "alice")+"x", "alice")
	var ae *authError
	if !errors.As(err, &ae) || ae.err == nil {
		t.Fatalf("error %v", err)
	}
}

func TestAuthConcurrentLogins(t *testing.T) {
	e, _ := newAuthEnv(t, nil)
	const n = 20
	var wg sync.WaitGroup
	ok := make(chan bool, 2*n)
	for i := range n {
		good, bad := e.dial(nil), e.dial(nil)
		name := "user" + strconv.Itoa(i)
		wg.Add(2)
		go func() { defer wg.Done(); m := good.authLogin(name, tokenFor(t, name)); ok <- *m.Success }()
		go func() { defer wg.Done(); m := bad.authLogin(name+"x", tokenFor(t, name)); ok <- !*m.Success }()
	}
	wg.Wait()
	close(ok)
	for r := range ok {
		if !r {
			t.Fatal("a concurrent login got the wrong answer")
		}
	}
}
