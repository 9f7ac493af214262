package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

var testNames = Names{
	DNS: []string{"localhost", "laptop", "laptop.local"},
	IPs: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback(), netip.MustParseAddr("192.168.1.20"), netip.MustParseAddr("fd00::20")},
}

func TestGeneratedOnceAndReused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state", "tls") // created on demand
	now := time.Now()
	first, err := LoadOrCreate(dir, testNames, now)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Generated || first.Reason != "first start" {
		t.Fatalf("first start: generated %v, reason %q", first.Generated, first.Reason)
	}
	for i := 0; i < 3; i++ { // restarts, a day apart
		again, err := LoadOrCreate(dir, testNames, now.Add(time.Duration(i)*24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		if again.Generated || again.Fingerprint != first.Fingerprint {
			t.Fatalf("restart %d: generated %v (%s), fingerprint %s, want the kept %s", i, again.Generated, again.Reason, again.Fingerprint, first.Fingerprint)
		}
	}
	// The key is private; the directory too.
	for _, p := range []string{dir, filepath.Join(dir, keyFile)} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v, want no access for group and others", p, st.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("state directory holds %d files, want 2 (no temporary leftovers)", len(entries))
	}
}

func TestCertificateShape(t *testing.T) {
	now := time.Now()
	lan, err := LoadOrCreate(t.TempDir(), testNames, now)
	if err != nil {
		t.Fatal(err)
	}
	leaf := lan.Cert.Leaf
	if m := Missing(leaf, testNames); m != "" {
		t.Fatalf("%s not covered: DNS %v, IPs %v", m, leaf.DNSNames, leaf.IPAddresses)
	}
	if len(leaf.DNSNames) != 3 || len(leaf.IPAddresses) != 4 {
		t.Errorf("SANs DNS %v IPs %v, want exactly the names asked for", leaf.DNSNames, leaf.IPAddresses)
	}
	pub, ok := leaf.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if leaf.IsCA {
		t.Error("a CA certificate: Firefox refuses it as a server certificate")
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth {
		t.Errorf("extended key usage %v, want server auth", leaf.ExtKeyUsage)
	}
	if life := leaf.NotAfter.Sub(now); life < 360*24*time.Hour || life > 398*24*time.Hour {
		t.Errorf("valid for %v from now, want about a year (at most 398 days)", life)
	}
	if leaf.NotBefore.After(now) {
		t.Error("not valid yet")
	}

	// A TLS client that trusts exactly this certificate verifies it for
	// each name, the way a browser does after the exception.
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	for _, name := range []string{"localhost", "laptop.local", "192.168.1.20", "fd00::20", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: name, CurrentTime: now}); err != nil {
			t.Errorf("verify for %s: %v", name, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "192.168.1.21", CurrentTime: now}); err == nil {
		t.Error("verifies for an address it does not cover")
	}
	if _, err := tls.X509KeyPair(pemOf(t, lan)); err != nil {
		t.Errorf("kept pair does not load: %v", err)
	}
}

func pemOf(t *testing.T, lan *LAN) ([]byte, []byte) {
	t.Helper()
	dir := t.TempDir()
	if err := save(dir, lan.Cert); err != nil {
		t.Fatal(err)
	}
	c, err1 := os.ReadFile(filepath.Join(dir, certFile))
	k, err2 := os.ReadFile(filepath.Join(dir, keyFile))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	return c, k
}

func TestRegeneratedWhenAddressesChange(t *testing.T) {
	dir, now := t.TempDir(), time.Now()
	first, err := LoadOrCreate(dir, testNames, now)
	if err != nil {
		t.Fatal(err)
	}
	// An address gone (Wi-Fi off): the kept certificate still covers
	// everything asked for, the browser's exception stays good.
	fewer := Names{DNS: testNames.DNS, IPs: testNames.IPs[:3]}
	if got, _ := LoadOrCreate(dir, fewer, now); got.Generated {
		t.Fatalf("regenerated although every name is covered: %s", got.Reason)
	}
	// A new address (another network): a new certificate covering it.
	moved := Names{DNS: testNames.DNS, IPs: append(testNames.IPs[:2:2], netip.MustParseAddr("10.0.0.7"))}
	got, err := LoadOrCreate(dir, moved, now)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Generated || got.Fingerprint == first.Fingerprint || !strings.Contains(got.Reason, "10.0.0.7") {
		t.Fatalf("after an address change: generated %v, reason %q", got.Generated, got.Reason)
	}
	if m := Missing(got.Cert.Leaf, moved); m != "" {
		t.Fatalf("new certificate misses %s", m)
	}
	// A renamed host, too.
	renamed := Names{DNS: []string{"localhost", "desk"}, IPs: moved.IPs}
	if got, _ := LoadOrCreate(dir, renamed, now); !got.Generated || !strings.Contains(got.Reason, "desk") {
		t.Fatalf("after a rename: generated %v, reason %q", got.Generated, got.Reason)
	}
}

func TestRegeneratedNearExpiryAndWhenBroken(t *testing.T) {
	dir, now := t.TempDir(), time.Now()
	first, err := LoadOrCreate(dir, testNames, now)
	if err != nil {
		t.Fatal(err)
	}
	late := now.Add(Validity - RenewBefore + time.Hour)
	got, err := LoadOrCreate(dir, testNames, late)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Generated || !strings.Contains(got.Reason, "expires") {
		t.Fatalf("near expiry: generated %v, reason %q", got.Generated, got.Reason)
	}
	// A key that does not match the certificate (a half-restored backup).
	other, err := LoadOrCreate(t.TempDir(), testNames, now)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey := pemOf(t, other)
	if err := os.WriteFile(filepath.Join(dir, keyFile), otherKey, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err = LoadOrCreate(dir, testNames, late)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Generated || !strings.Contains(got.Reason, "unusable") {
		t.Fatalf("mismatched key: generated %v, reason %q", got.Generated, got.Reason)
	}
	// Garbage.
	if err := os.WriteFile(filepath.Join(dir, certFile), []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err = LoadOrCreate(dir, testNames, now); err != nil || !got.Generated {
		t.Fatalf("garbage: %v, %+v", err, got)
	}
	if got.Fingerprint == first.Fingerprint {
		t.Fatal("same fingerprint after regeneration")
	}
}

func TestFingerprint(t *testing.T) {
	lan, err := LoadOrCreate(t.TempDir(), testNames, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(lan.Cert.Certificate[0])
	want := strings.ToUpper(hex.EncodeToString(sum[:]))
	fp := lan.Fingerprint
	if len(fp) != 32*3-1 || strings.ReplaceAll(fp, ":", "") != want {
		t.Fatalf("fingerprint %q, want %s as colon-separated upper-case pairs", fp, want)
	}
	if got := Fingerprint([]byte("abc")); got != "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD" {
		t.Fatalf("Fingerprint(abc) = %s", got) // SHA-256("abc"), FIPS 180-2 example
	}
}

func TestLocalNames(t *testing.T) {
	// Other tests on this machine add and remove interfaces: take a
	// snapshot during which the interface list did not change.
	var n Names
	var want []netip.Addr
	for try := 0; ; try++ {
		before := lanInterfaceAddrs(t)
		var err error
		if n, err = LocalNames(); err != nil {
			t.Fatal(err)
		}
		if after := lanInterfaceAddrs(t); slices.Equal(before, after) {
			want = before
			break
		}
		if try == 20 {
			t.Fatal("the interface list keeps changing")
		}
	}
	host, _ := os.Hostname()
	for _, d := range []string{"localhost", strings.ToLower(host)} {
		if !slices.Contains(n.DNS, d) {
			t.Errorf("%q missing from %v", d, n.DNS)
		}
	}
	for _, ip := range append(want, netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback()) {
		if !slices.Contains(n.IPs, ip) {
			t.Errorf("%s missing from %v", ip, n.IPs)
		}
	}
	if len(n.IPs) != len(want)+2 {
		t.Errorf("IPs %v, want the interface addresses %v and the loopbacks", n.IPs, want)
	}
}

// lanInterfaceAddrs lists the non-loopback, non-link-local interface
// addresses, sorted.
func lanInterfaceAddrs(t *testing.T) []netip.Addr {
	t.Helper()
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	var out []netip.Addr
	for _, a := range ifaddrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.IsLinkLocalUnicast() {
			continue
		}
		ip, _ := netip.AddrFromSlice(ipn.IP)
		out = append(out, ip.Unmap())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func TestNoStateDir(t *testing.T) {
	if _, err := LoadOrCreate("", testNames, time.Now()); err == nil {
		t.Fatal("no error without a directory")
	}
	// A file where the directory should be.
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreate(filepath.Join(f, "tls"), testNames, time.Now()); err == nil {
		t.Fatal("no error when the state directory cannot be made")
	}
}

func TestValidHostname(t *testing.T) {
	for h, want := range map[string]bool{"laptop": true, "my-pc.lan": true, "Desk01": true, "": false,
		"bad_name": false, "café": false, "a..b": false, ".x": false, "x.": false, "a b": false} {
		if got := validHostname(h); got != want {
			t.Errorf("validHostname(%q) = %v, want %v", h, got, want)
		}
	}
}
