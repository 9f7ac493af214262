// Package certs provides the server's TLS certificates: a self-signed one
// for the LAN, kept in a state directory so a browser's exception survives
// restarts, and ACME (Let's Encrypt or any RFC 8555 CA) for public hosts.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Validity of a generated certificate. Apple platforms refuse TLS server
// certificates valid for more than 825 days, public CAs stop at 398; a
// year stays under both. A certificate with less than RenewBefore left is
// replaced at the next start.
const (
	Validity    = 365 * 24 * time.Hour
	RenewBefore = 30 * 24 * time.Hour
)

// File names inside the state directory.
const (
	certFile = "lan-cert.pem"
	keyFile  = "lan-key.pem"
)

// Names are what a certificate must cover.
type Names struct {
	DNS []string
	IPs []netip.Addr
}

// LocalNames returns the names a device may use to reach this host:
// localhost, 127.0.0.1, ::1, the host name (and name.local for mDNS when
// it has no dot) and every non-loopback, non-link-local interface address.
func LocalNames() (Names, error) {
	n := Names{DNS: []string{"localhost"}, IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()}}
	if h, err := os.Hostname(); err == nil && validHostname(h) && h != "localhost" {
		n.DNS = append(n.DNS, h)
		if !strings.Contains(h, ".") {
			n.DNS = append(n.DNS, h+".local")
		}
	}
	addrs, err := LANAddrs()
	if err != nil {
		return n, err
	}
	n.IPs = append(n.IPs, addrs...)
	return n.normal(), nil
}

// validHostname reports whether h can be a DNS name in a certificate
// (letters, digits, hyphens and dots; a host name may be anything).
func validHostname(h string) bool {
	if h == "" || len(h) > 253 || strings.HasPrefix(h, ".") || strings.HasSuffix(h, ".") || strings.Contains(h, "..") {
		return false
	}
	for _, c := range h {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// LANAddrs returns this host's non-loopback, non-link-local unicast
// addresses, IPv4 first: the addresses another device can open.
func LANAddrs() ([]netip.Addr, error) {
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("interface addresses: %w", err)
	}
	var out []netip.Addr
	for _, a := range ifaddrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip, ok := netip.AddrFromSlice(ipn.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsMulticast() || ip.IsUnspecified() {
			continue
		}
		out = append(out, ip)
	}
	slices.SortStableFunc(out, func(a, b netip.Addr) int {
		if a.Is4() != b.Is4() {
			if a.Is4() {
				return -1
			}
			return 1
		}
		return a.Compare(b)
	})
	return slices.Compact(out), nil
}

// normal sorts and deduplicates, lower-casing DNS names.
func (n Names) normal() Names {
	var out Names
	for _, d := range n.DNS {
		out.DNS = append(out.DNS, strings.ToLower(d))
	}
	for _, ip := range n.IPs {
		out.IPs = append(out.IPs, ip.Unmap())
	}
	slices.Sort(out.DNS)
	slices.SortFunc(out.IPs, netip.Addr.Compare)
	out.DNS, out.IPs = slices.Compact(out.DNS), slices.Compact(out.IPs)
	return out
}

// LAN is the self-signed certificate in use.
type LAN struct {
	Cert        tls.Certificate // Leaf set
	Fingerprint string          // SHA-256 of the DER certificate, as browsers show it
	Generated   bool            // created at this start (the browser asks again)
	Reason      string          // why it was created, when Generated
}

// Missing returns the first of names the certificate does not cover, or "".
func Missing(leaf *x509.Certificate, names Names) string {
	for _, d := range names.DNS {
		if !slices.ContainsFunc(leaf.DNSNames, func(s string) bool { return strings.EqualFold(s, d) }) {
			return d
		}
	}
	for _, ip := range names.IPs {
		if !slices.ContainsFunc(leaf.IPAddresses, func(c net.IP) bool {
			a, ok := netip.AddrFromSlice(c)
			return ok && a.Unmap() == ip.Unmap()
		}) {
			return ip.String()
		}
	}
	return ""
}

// LoadOrCreate returns the certificate kept in dir if it covers names and
// is valid for at least RenewBefore after now; otherwise it generates a new
// one (ECDSA P-256, valid for Validity, covering exactly names) and keeps
// it in dir (created 0700; the key is written 0600).
func LoadOrCreate(dir string, names Names, now time.Time) (*LAN, error) {
	if dir == "" {
		return nil, errors.New("certs: no state directory")
	}
	names = names.normal()
	reason := "first start"
	cert, err := load(dir)
	switch {
	case err == nil:
		leaf := cert.Leaf
		if m := Missing(leaf, names); m != "" {
			reason = fmt.Sprintf("the addresses changed: %s is not covered", m)
		} else if now.Add(RenewBefore).After(leaf.NotAfter) {
			reason = "it expires on " + leaf.NotAfter.UTC().Format(time.DateOnly)
		} else if now.Before(leaf.NotBefore) {
			reason = "it is not valid yet (clock changed?)"
		} else {
			return &LAN{Cert: cert, Fingerprint: Fingerprint(leaf.Raw)}, nil
		}
	case !errors.Is(err, os.ErrNotExist):
		reason = fmt.Sprintf("the kept one is unusable (%v)", err)
	}
	cert, err = generate(names, now)
	if err != nil {
		return nil, err
	}
	if err := save(dir, cert); err != nil {
		return nil, err
	}
	return &LAN{Cert: cert, Fingerprint: Fingerprint(cert.Leaf.Raw), Generated: true, Reason: reason}, nil
}

// Fingerprint formats the SHA-256 of a DER certificate as Firefox and
// `openssl x509 -fingerprint -sha256` show it (Chrome and Safari show the
// same hex bytes separated by spaces).
func Fingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func load(dir string) (tls.Certificate, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, keyFile))
	if err != nil {
		return tls.Certificate{}, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM) // checks that the key matches; sets Leaf
	if err != nil {
		return tls.Certificate{}, err
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return tls.Certificate{}, err
		}
	}
	return cert, nil
}

func generate(names Names, now time.Time) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return tls.Certificate{}, err
	}
	host, _ := os.Hostname()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "videochat " + host, Organization: []string{"videochat (self-signed)"}},
		NotBefore:    now.Add(-time.Hour), // clocks of other devices may lag
		NotAfter:     now.Add(Validity),
		// A leaf, not a CA: Firefox refuses a CA certificate used as a server's.
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		DNSNames:              names.DNS,
	}
	for _, ip := range names.IPs {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.IP(ip.AsSlice()))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// save writes the key and then the certificate, each through a temporary
// file and a rename, so a crash leaves the old pair or a pair that load
// rejects (then a new one is made), never a half-written file.
func save(dir string, cert tls.Certificate) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("certs: state directory: %w", err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		return err
	}
	if err := writeAtomic(filepath.Join(dir, keyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})); err != nil {
		return err
	}
	return writeAtomic(filepath.Join(dir, certFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}))
}

func writeAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("certs: write %s: %w", path, err)
	}
	return nil
}
