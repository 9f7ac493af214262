package turn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// selfSigned returns a server TLS config with a fresh self-signed
// certificate for 127.0.0.1 and a client config trusting it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "turn test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
	}

	return server, &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, ServerName: "127.0.0.1"}
}

func TestAllocateOverTLS(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, func(c *Config) {
		c.TLSAddr = "127.0.0.1:0"
		c.TLSConfig = serverTLS
	})
	if srv.TLSAddr() == nil {
		t.Fatal("TLSAddr() = nil with TLS configured")
	}

	user, pass := Credentials(testSecret, "tls-user", time.Hour, time.Now())
	relay := allocate(t, tlsClient(t, srv, clientTLS, user, pass))
	roundTrip(t, relay, sfu.udpAddr(), "over turns")

	tlsPort := strconv.Itoa(srv.TLSAddr().(*net.TCPAddr).Port)
	servers := srv.ICEServers("tls-user", "turn.example.com")
	want := "turns:turn.example.com:" + tlsPort + "?transport=tcp"
	if len(servers) != 2 || !contains(servers[1].URLs, want) {
		t.Fatalf("ICEServers = %+v, want %s among the TURN URLs", servers, want)
	}
}

// A client that connects but never completes the handshake must not keep
// the server from closing.
func TestTLSStalledClientClosed(t *testing.T) {
	serverTLS, _ := selfSigned(t)
	sfu := startEcho(t)
	srv := startServer(t, []netip.AddrPort{sfu.addrPort()}, func(c *Config) {
		c.TLSAddr = "127.0.0.1:0"
		c.TLSConfig = serverTLS
	})
	conn, err := net.Dial("tcp", srv.TLSAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	eventually(t, "connection to be tracked", func() bool { return srv.tls.connCount() == 1 })
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Fatalf("stalled TLS connection still open after Close: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}

	return false
}
