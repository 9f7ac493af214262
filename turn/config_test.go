package turn

import (
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestNewRejectsBadConfig(t *testing.T) {
	peer := []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:5000")}
	cases := []struct {
		name string
		cfg  Config
		want error
	}{
		{"no peers", Config{ListenAddr: "127.0.0.1:0"}, errNoPeers},
		{"unspecified peer", Config{ListenAddr: "127.0.0.1:0", AllowedPeers: []netip.AddrPort{netip.MustParseAddrPort("0.0.0.0:5000")}}, errBadPeer},
		{"port range inverted", Config{AllowedPeers: peer, RelayPortMin: 2000, RelayPortMax: 1000}, errBadPortRange},
		{"port range min 0", Config{AllowedPeers: peer, RelayPortMax: 1000}, errBadPortRange},
		{"IPv6 relay IP", Config{AllowedPeers: peer, RelayIP: net.ParseIP("2001:db8::1")}, errRelayIPv4},
		{"TLS without cert", Config{AllowedPeers: peer, TLSAddr: "127.0.0.1:0", TLSConfig: &tls.Config{}}, errTLSConfig},
		{"negative quota", Config{AllowedPeers: peer, UserQuota: -1}, errNegativeLimit},
		{"negative source quota", Config{AllowedPeers: peer, SourceQuota: -1}, errNegativeLimit},
		{"negative setup timeout", Config{AllowedPeers: peer, SetupTimeout: -1}, errNegativeLimit},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := New(tc.cfg)
			if err == nil {
				_ = srv.Close()
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("New: err = %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := New(Config{ListenAddr: "not an address", AllowedPeers: peer}); err == nil {
		t.Fatal("New accepted a bad ListenAddr")
	}
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := Config{AllowedPeers: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:5000")}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ListenAddr != ":3478" || cfg.Realm != "videochat" || cfg.CredentialTTL != 4*time.Hour ||
		cfg.RelayPortMin != 49152 || cfg.RelayPortMax != 65535 || cfg.UserQuota != 10 ||
		cfg.MaxAllocations != 1000 || cfg.MaxConns != 2000 || cfg.Logger == nil ||
		cfg.SourceQuota != 100 || cfg.MaxConnsPerSource != 100 || cfg.SetupTimeout != 10*time.Second {
		t.Fatalf("unexpected defaults: %+v", cfg)
	}
	if len(cfg.Secret) != 32 || cfg.RelayIP.To4() == nil {
		t.Fatalf("secret len %d, relay IP %v", len(cfg.Secret), cfg.RelayIP)
	}
	secret := []byte("abc")
	cfg, err = Config{Secret: secret, AllowedPeers: cfg.AllowedPeers}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	secret[0] = 'x'
	if string(cfg.Secret) != "abc" {
		t.Fatal("Config.Secret aliases the caller's slice")
	}
}

// Several servers run side by side in one process and close cleanly.
func TestServersSideBySide(t *testing.T) {
	sfu := startEcho(t)
	a := startServer(t, []netip.AddrPort{sfu.addrPort()}, nil)
	b := startServer(t, []netip.AddrPort{sfu.addrPort()}, nil)
	if a.UDPAddr().Port == b.UDPAddr().Port {
		t.Fatal("two servers share a UDP port")
	}
	user, pass := Credentials(testSecret, "x", time.Hour, time.Now())
	relay := allocate(t, tcpClient(t, b, user, pass))
	roundTrip(t, relay, sfu.udpAddr(), "via b")
	if err := b.Close(); err != nil {
		t.Fatalf("Close with an active allocation: %v", err)
	}
	if n := b.AllocationCount(); n != 0 {
		t.Fatalf("AllocationCount after Close = %d", n)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}
