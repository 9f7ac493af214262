package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/gorilla/websocket"

	"videochat/signaling"
)

const appAuthSecret = "an-operator-secret-of-at-least-32-bytes"

func appToken(t *testing.T, secret, sub string, exp time.Time) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": sub, "exp": exp.Unix()}).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// authDial opens a WebSocket to app and sends one login.
func authDial(t *testing.T, app *App, name, token string) (*websocket.Conn, signaling.Message) {
	t.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(wsURLOf(app.URL(), "/ws"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.Close() })
	return ws, authLoginOn(t, ws, name, token)
}

func authLoginOn(t *testing.T, ws *websocket.Conn, name, token string) signaling.Message {
	t.Helper()
	_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := ws.WriteJSON(signaling.Message{Type: "login", Name: name, Token: token}); err != nil {
		t.Fatal(err)
	}
	for {
		var m signaling.Message
		if err := ws.ReadJSON(&m); err != nil {
			t.Fatal(err)
		}
		if m.Type == "login" {
			return m
		}
		if m.Type != "users" {
			t.Fatalf("unexpected %+v", m)
		}
	}
}

func TestAuthWholeProgram(t *testing.T) {
	app := startApp(t, func(c *Config) {
		c.AuthSecret = appAuthSecret
		// External TURN: iceServers with credentials, no relay to start.
		c.TURNExternal, c.TURNSecret = "turn:turn.example.test:3478", "turn-secret"
	})
	exp := time.Now().Add(time.Hour)

	// A bad token is refused, without ICE servers; the connection stays
	// usable and then logs in with a good one.
	ws, m := authDial(t, app, "alice", appToken(t, "not the operator's secret, but long enough", "alice", exp))
	if m.Success == nil || *m.Success || len(m.ICEServers) != 0 || !strings.Contains(m.Message, "signature") {
		t.Fatalf("bad token: %+v", m)
	}
	if m := authLoginOn(t, ws, "alice", ""); *m.Success || !strings.Contains(m.Message, "token") {
		t.Fatalf("no token: %+v", m)
	}
	if m := authLoginOn(t, ws, "alice", appToken(t, appAuthSecret, "bob", exp)); *m.Success {
		t.Fatalf("token for another name: %+v", m)
	}
	if m := authLoginOn(t, ws, "alice", appToken(t, appAuthSecret, "alice", time.Now().Add(-time.Hour))); *m.Success ||
		!strings.Contains(m.Message, "expired") {
		t.Fatalf("expired token: %+v", m)
	}
	m = authLoginOn(t, ws, "alice", appToken(t, appAuthSecret, "alice", exp))
	if m.Success == nil || !*m.Success || m.Session == "" || len(m.ICEServers) == 0 || m.ICEServers[0].Credential == "" {
		t.Fatalf("valid token: %+v", m)
	}
	if !strings.HasPrefix(m.ICEServers[0].URLs[0], "turn:turn.example.test") {
		t.Fatalf("iceServers %+v", m.ICEServers)
	}
}

func TestAuthWholeProgramOffByDefault(t *testing.T) {
	app := startApp(t, nil)
	// The tutorial client's login: no token.
	if _, m := authDial(t, app, "tutorial", ""); m.Success == nil || !*m.Success {
		t.Fatalf("tokenless login without -auth-secret: %+v", m)
	}
}

func TestAuthConfigFlags(t *testing.T) {
	long := strings.Repeat("k", 32)
	cfg, err := parseWith(nil, nil)
	if err != nil || cfg.AuthSecret != "" {
		t.Fatalf("default: %q %v", cfg.AuthSecret, err)
	}
	if cfg, err = parseWith([]string{"-auth-secret", long}, nil); err != nil || cfg.AuthSecret != long {
		t.Fatalf("flag: %q %v", cfg.AuthSecret, err)
	}
	if cfg, err = parseWith(nil, map[string]string{"VIDEOCHAT_AUTH_SECRET": long + "env"}); err != nil || cfg.AuthSecret != long+"env" {
		t.Fatalf("env: %q %v", cfg.AuthSecret, err)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("\n  "+long+"file \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cfg, err = parseWith([]string{"-auth-secret-file", file}, nil); err != nil || cfg.AuthSecret != long+"file" {
		t.Fatalf("file: %q %v", cfg.AuthSecret, err)
	}
	if cfg, err = parseWith(nil, map[string]string{"VIDEOCHAT_AUTH_SECRET_FILE": file}); err != nil || cfg.AuthSecret != long+"file" {
		t.Fatalf("file from env: %q %v", cfg.AuthSecret, err)
	}

	empty := filepath.Join(dir, "empty")
	short := filepath.Join(dir, "short")
	_ = os.WriteFile(empty, []byte(" \n"), 0o600)
	_ = os.WriteFile(short, []byte("tiny\n"), 0o600)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-auth-secret", "short"}, "at least 32 bytes"},
		{[]string{"-auth-secret-file", short}, "at least 32 bytes"},
		{[]string{"-auth-secret-file", empty}, "is empty"},
		{[]string{"-auth-secret-file", filepath.Join(dir, "missing")}, "-auth-secret-file"},
		{[]string{"-auth-secret", long, "-auth-secret-file", file}, "not both"},
	} {
		_, err := parseWith(tc.args, nil)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.args, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), long) {
			t.Errorf("%q: the error shows the secret: %v", tc.args, err)
		}
	}
}
