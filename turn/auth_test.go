package turn

import (
	"net"
	"net/netip"
	"testing"
	"time"

	pturn "github.com/pion/turn/v4"
)

func TestAllocateValidCredentials(t *testing.T) {
	for _, transport := range []string{"udp", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			sfu := startEcho(t)
			srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, func(c *Config) {
				c.RelayPortMin, c.RelayPortMax = 50000, 50999
			})
			user, pass := Credentials(testSecret, "alice", time.Hour, time.Now())
			var c *pturn.Client
			if transport == "udp" {
				c = udpClient(t, srv, user, pass)
			} else {
				c = tcpClient(t, srv, user, pass)
			}
			relay := allocate(t, c)

			ra, ok := relay.LocalAddr().(*net.UDPAddr)
			if !ok || !ra.IP.Equal(net.IPv4(127, 0, 0, 1)) {
				t.Fatalf("relayed address = %v, want 127.0.0.1:<port>", relay.LocalAddr())
			}
			if ra.Port < 50000 || ra.Port > 50999 {
				t.Fatalf("relay port %d outside 50000-50999", ra.Port)
			}
			if n := srv.AllocationCount(); n != 1 {
				t.Fatalf("AllocationCount = %d, want 1", n)
			}
			roundTrip(t, relay, sfu.udpAddr(), "hello over "+transport)
		})
	}
}

func TestAllocateRefusedCredentials(t *testing.T) {
	now := time.Now()
	good, goodPass := Credentials(testSecret, "alice", time.Hour, now)
	otherUser, otherPass := Credentials([]byte("another secret"), "alice", time.Hour, now)
	expUser, expPass := Credentials(testSecret, "alice", -time.Minute, now)
	sign := func(u string) (string, string) { return u, restPassword(testSecret, u) }
	cases := []struct {
		name, user, pass string
	}{
		{"wrong password", good, goodPass + "x"},
		{"other secret", otherUser, otherPass},
		{"expired", expUser, expPass},
		{"no expiry", "alice", restPassword(testSecret, "alice")},
	}
	for _, u := range []string{"abc:alice", "-5:alice", "+99999999999:alice", "1e12:alice", ":alice", " 99999999999:alice"} {
		user, pass := sign(u)
		cases = append(cases, struct{ name, user, pass string }{"malformed " + u, user, pass})
	}

	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, nil)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := udpClient(t, srv, tc.user, tc.pass)
			relay, err := c.Allocate()
			if err == nil {
				_ = relay.Close()
				t.Fatalf("Allocate succeeded with %s", tc.name)
			}
			if code := turnErrorCode(err); code != 400 {
				t.Fatalf("error code = %d (%v), want 400", code, err)
			}
		})
	}
	if n := srv.AllocationCount(); n != 0 {
		t.Fatalf("AllocationCount = %d after refused requests, want 0", n)
	}
}

func TestRestAuthHandler(t *testing.T) {
	h := restAuthHandler(testSecret, "videochat", testLogger())
	user, pass := Credentials(testSecret, "bob", time.Hour, time.Now())

	key, ok := h(user, "videochat", nil)
	if !ok {
		t.Fatal("valid credentials refused")
	}
	if want := pturn.GenerateAuthKey(user, "videochat", pass); string(key) != string(want) {
		t.Fatal("key differs from GenerateAuthKey(username, realm, password)")
	}
	// pion's own TURN REST handler must derive the same key (coturn compatibility).
	pionKey, ok := pturn.LongTermTURNRESTAuthHandler(string(testSecret), nil)(user, "videochat", nil)
	if !ok || string(pionKey) != string(key) {
		t.Fatal("key differs from pion's LongTermTURNRESTAuthHandler")
	}
	if _, ok := h(user, "other-realm", nil); ok {
		t.Fatal("credentials accepted for another realm")
	}
	if _, ok := h("", "videochat", nil); ok {
		t.Fatal("empty username accepted")
	}
}

func TestCredentialsKnownAnswer(t *testing.T) {
	now := time.Unix(1700000000, 0)
	user, pass := Credentials([]byte("s3cret"), "alice", time.Hour, now)
	if user != "1700003600:alice" {
		t.Fatalf("username = %q", user)
	}
	// python3: base64(hmac.new(b"s3cret", b"1700003600:alice", sha1).digest())
	if pass != "YAFdW/YDZewZsR1QSgUk2IrfbRI=" {
		t.Fatalf("password = %q", pass)
	}
	if user, _ := Credentials([]byte("s3cret"), "", time.Hour, now); user != "1700003600" {
		t.Fatalf("username without user = %q", user)
	}
}
