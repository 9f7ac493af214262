package certs

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACMEConfig configures certificates from an ACME CA.
type ACMEConfig struct {
	Domains      []string // the names to obtain certificates for; others are refused
	Email        string   // contact for the CA's expiry and incident mail; optional
	DirectoryURL string   // the CA's directory; empty: Let's Encrypt production
	CacheDir     string   // account key and certificates are kept here
	// CABundle is a PEM file of roots trusted (besides the system's) for
	// the HTTPS connection to the CA, e.g. a private CA such as step-ca or
	// Pebble; empty: system roots only.
	CABundle string
}

// NewACME returns an autocert manager that obtains and renews
// certificates on demand (TLS-ALPN-01 through a TLS listener using its
// TLSConfig, and HTTP-01 once its HTTPHandler serves port 80).
func NewACME(c ACMEConfig) (*autocert.Manager, error) {
	if len(c.Domains) == 0 {
		return nil, errors.New("acme: no domain")
	}
	if c.CacheDir == "" {
		return nil, errors.New("acme: no cache directory")
	}
	for _, d := range c.Domains {
		if !strings.Contains(strings.Trim(d, "."), ".") {
			return nil, fmt.Errorf("acme: %q is not a fully qualified domain name", d)
		}
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      autocert.DirCache(c.CacheDir),
		HostPolicy: autocert.HostWhitelist(c.Domains...),
		Email:      c.Email,
		// Renew 30 days ahead, as Let's Encrypt recommends for its
		// 90-day certificates (autocert's default).
		RenewBefore: 30 * 24 * time.Hour,
	}
	if c.DirectoryURL != "" || c.CABundle != "" {
		m.Client = &acme.Client{DirectoryURL: c.DirectoryURL}
		if m.Client.DirectoryURL == "" {
			m.Client.DirectoryURL = autocert.DefaultACMEDirectory
		}
	}
	if c.CABundle != "" {
		pool, err := caPool(c.CABundle)
		if err != nil {
			return nil, err
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		m.Client.HTTPClient = &http.Client{Transport: tr, Timeout: time.Minute}
	}
	return m, nil
}

// caPool is the system roots plus the certificates of a PEM file.
func caPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("acme: CA bundle: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("acme: CA bundle %s holds no PEM certificate", file)
	}
	return pool, nil
}

// DefaultServerName makes getCert answer a client that sends no SNI
// (some TURN clients, or an address typed as an IP) with the certificate
// of name, instead of failing the handshake.
func DefaultServerName(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), name string) func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		if hello.ServerName == "" {
			h := *hello
			h.ServerName = name
			hello = &h
		}
		return getCert(hello)
	}
}
