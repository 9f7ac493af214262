package main

import (
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"
)

// HTTPS configures HTTPS besides -addr: a LAN listener with a self-signed
// certificate (the default), or certificates from ACME.
type HTTPS struct {
	HTTPSAddr    string   // LAN HTTPS listener (self-signed); used when -addr serves plain HTTP; empty: off
	StateDir     string   // where certificates (self-signed, ACME account and cache) are kept
	ACMEDomains  []string // obtain certificates for these names from ACME; -addr then serves HTTPS
	ACMEEmail    string   // contact address given to the CA
	ACMEDir      string   // the CA's directory URL; empty: Let's Encrypt
	ACMEHTTPAddr string   // HTTP-01 challenges (and a redirect to HTTPS); empty: TLS-ALPN-01 only
	ACMECABundle string   // PEM roots trusted for the CA's own HTTPS (a private CA)

	lanCheckEvery time.Duration // not a flag: how often new local addresses are looked for (default 1 min)
}

func httpsFlags(fs *flag.FlagSet, h *HTTPS) {
	fs.StringVar(&h.HTTPSAddr, "https-addr", ":9443", "HTTPS listen address for other devices on the LAN, with a self-signed certificate kept in -state-dir (when -addr serves plain HTTP; empty disables)")
	fs.StringVar(&h.StateDir, "state-dir", defaultStateDir(), "directory for state kept across restarts: the LAN certificate, the ACME account and certificates")
	fs.Func("acme-domain", "comma-separated domain names to get certificates for from an ACME CA (Let's Encrypt by default); -addr then serves HTTPS with them and TURN offers turns: (needs -addr on port 443 or -acme-http-addr on port 80 reachable from the internet)", func(v string) error {
		h.ACMEDomains = splitList(v)
		return nil
	})
	fs.StringVar(&h.ACMEEmail, "acme-email", "", "contact e-mail given to the ACME CA (expiry warnings); optional")
	fs.StringVar(&h.ACMEDir, "acme-dir", "", "ACME directory URL (default Let's Encrypt production, https://acme-v02.api.letsencrypt.org/directory)")
	fs.StringVar(&h.ACMEHTTPAddr, "acme-http-addr", ":80", "listen address for ACME HTTP-01 challenges and a redirect to HTTPS (empty: TLS-ALPN-01 on -addr only)")
	fs.StringVar(&h.ACMECABundle, "acme-ca-bundle", "", "PEM file of extra root certificates trusted for the ACME directory's HTTPS (a private ACME CA)")
}

// check validates the HTTPS flags; tlsCert tells whether -tls-cert is set.
func (h *HTTPS) check(tlsCert bool) error {
	if len(h.ACMEDomains) == 0 {
		if h.ACMEEmail != "" || h.ACMEDir != "" || h.ACMECABundle != "" {
			return errors.New("-acme-email, -acme-dir and -acme-ca-bundle need -acme-domain")
		}
		return nil
	}
	if tlsCert {
		return errors.New("-acme-domain and -tls-cert: give one, not both")
	}
	for _, d := range h.ACMEDomains {
		if !strings.Contains(strings.Trim(d, "."), ".") || strings.ContainsAny(d, "/: ") {
			return fmt.Errorf("-acme-domain %q is not a fully qualified domain name", d)
		}
	}
	return nil
}
