package turn

import (
	"net/netip"
	"reflect"
	"strconv"
	"testing"
	"time"
)

func TestICEServersURLs(t *testing.T) {
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, nil)
	udp, tcp := strconv.Itoa(srv.UDPAddr().Port), strconv.Itoa(srv.TCPAddr().Port)
	urls := func(h string) []string {
		return []string{"stun:" + h + ":" + udp, "turn:" + h + ":" + udp + "?transport=udp", "turn:" + h + ":" + tcp + "?transport=tcp"}
	}
	cases := []struct{ host, want string }{
		{"203.0.113.7", "203.0.113.7"},
		{"203.0.113.7:8443", "203.0.113.7"},
		{"::ffff:203.0.113.7", "203.0.113.7"},
		{"2001:db8::1", "[2001:db8::1]"},
		{"[2001:db8::1]", "[2001:db8::1]"},
		{"[2001:db8::1]:443", "[2001:db8::1]"},
		{"2001:DB8:0::1", "[2001:db8::1]"},
		{"turn.example.com", "turn.example.com"},
		{"Call.Example.COM:443", "call.example.com"},
		{"localhost", "localhost"},
		{"", "127.0.0.1"}, // RelayIP
	}
	for _, tc := range cases {
		got := srv.ICEServers("alice", tc.host)
		if len(got) != 2 {
			t.Fatalf("ICEServers(%q) = %+v, want 2 entries", tc.host, got)
		}
		all := append(append([]string{}, got[0].URLs...), got[1].URLs...)
		if want := urls(tc.want); !reflect.DeepEqual(all, want) {
			t.Errorf("ICEServers(%q) URLs = %v, want %v", tc.host, all, want)
		}
		if got[0].Username != "" || got[1].Username == "" || got[1].Credential == "" {
			t.Errorf("ICEServers(%q): credentials misplaced: %+v", tc.host, got)
		}
	}
	for _, bad := range []string{"a b", "evil.com/x?transport=tcp", "fe80::1%eth0", "-bad.com", "x..y", "[::1", "user@host"} {
		if got := srv.ICEServers("alice", bad); got != nil {
			t.Errorf("ICEServers(%q) = %+v, want nil", bad, got)
		}
	}
}

func TestICEServersCredentialsAllocate(t *testing.T) {
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, func(c *Config) { c.CredentialTTL = 2 * time.Hour })
	before := time.Now()
	turnSrv := srv.ICEServers("alice", "127.0.0.1")[1]

	expiry, ok := parseExpiry(turnSrv.Username)
	if !ok || quotaUser(turnSrv.Username) != "alice" {
		t.Fatalf("username %q does not parse as <expiry>:alice", turnSrv.Username)
	}
	if d := expiry.Sub(before); d < 2*time.Hour-2*time.Second || d > 2*time.Hour+2*time.Second {
		t.Fatalf("credential lifetime %v, want ~2h", d)
	}
	if turnSrv.Credential != restPassword(testSecret, turnSrv.Username) {
		t.Fatal("credential is not HMAC-SHA1(secret, username)")
	}
	relay := allocate(t, udpClient(t, srv, turnSrv.Username, turnSrv.Credential))
	roundTrip(t, relay, sfu.udpAddr(), "with issued credentials")
}

func TestExternal(t *testing.T) {
	urls := []string{"turn:turn.example.com:3478?transport=udp", "turns:turn.example.com:443?transport=tcp"}
	var src ICEServerSource = External{URLs: urls, Secret: []byte("coturn"), TTL: time.Hour}
	got := src.ICEServers("bob", "ignored.example.org")
	if len(got) != 1 || !reflect.DeepEqual(got[0].URLs, urls) {
		t.Fatalf("External.ICEServers = %+v", got)
	}
	if quotaUser(got[0].Username) != "bob" || got[0].Credential != restPassword([]byte("coturn"), got[0].Username) {
		t.Fatalf("External credentials do not verify: %+v", got[0])
	}
	got[0].URLs[0] = "mutated"
	if urls[0] == "mutated" {
		t.Fatal("External shares its URL slice with callers")
	}
	if noCreds := (External{URLs: urls}).ICEServers("bob", ""); noCreds[0].Username != "" || noCreds[0].Credential != "" {
		t.Fatalf("credentials without a secret: %+v", noCreds)
	}
	if (External{}).ICEServers("bob", "") != nil {
		t.Fatal("External without URLs returned servers")
	}
}
