package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"videochat/signaling"
)

// writeSelfSigned writes a certificate for localhost/127.0.0.1 and its key.
func writeSelfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestTLSServesHTTPSAndTURNS(t *testing.T) {
	cert, key := writeSelfSigned(t)
	app := startApp(t, func(c *Config) {
		c.TLSCert, c.TLSKey = cert, key
		c.TURNAddr, c.TURNTLSAddr = "127.0.0.1:0", "127.0.0.1:0"
	})
	if !strings.HasPrefix(app.URL(), "https://") {
		t.Fatalf("URL %s is not https", app.URL())
	}
	insecure := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // self-signed test certificate
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: insecure}}
	resp, err := client.Get(app.URL())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / over https: %s", resp.Status)
	}

	dialer := websocket.Dialer{TLSClientConfig: insecure}
	ws, _, err := dialer.Dial("wss"+strings.TrimPrefix(app.URL(), "https")+"ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	if err := ws.WriteJSON(signaling.Message{Type: "login", Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	var reply signaling.Message
	if err := ws.ReadJSON(&reply); err != nil {
		t.Fatal(err)
	}
	var urls []string
	for _, s := range reply.ICEServers {
		urls = append(urls, s.URLs...)
	}
	if !strings.Contains(strings.Join(urls, " "), "turns:localhost:") {
		t.Fatalf("no turns: URL in %v", urls)
	}
}
