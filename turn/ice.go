package turn

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// ICEServer is one entry of RTCConfiguration.iceServers.
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// ICEServerSource hands out ICE servers to a logged-in user. *Server (the
// embedded TURN server) and External (e.g. coturn) implement it.
type ICEServerSource interface {
	// ICEServers returns the ICE servers for user, reachable at host (an
	// IP, bracketed or not, or a DNS name; a ":port" suffix is ignored).
	ICEServers(user, host string) []ICEServer
}

// External points clients at an external TURN server such as coturn
// configured with use-auth-secret / static-auth-secret = Secret.
type External struct {
	// URLs are handed out as-is, e.g. "turn:turn.example.com:3478?transport=udp",
	// "turns:turn.example.com:443?transport=tcp".
	URLs []string
	// Secret is coturn's static-auth-secret. If empty, no credentials are
	// handed out (e.g. STUN-only URLs).
	Secret []byte
	// TTL of issued credentials (default DefaultCredentialTTL, 4h; see
	// Config.CredentialTTL for why it must outlast a call).
	TTL time.Duration
}

// ICEServers implements ICEServerSource. The host is ignored: the URLs name
// the external server.
func (e External) ICEServers(user, _ string) []ICEServer {
	if len(e.URLs) == 0 {
		return nil
	}
	srv := ICEServer{URLs: append([]string(nil), e.URLs...)}
	if len(e.Secret) > 0 {
		ttl := e.TTL
		if ttl <= 0 {
			ttl = DefaultCredentialTTL
		}
		srv.Username, srv.Credential = Credentials(e.Secret, user, ttl, time.Now())
	}

	return []ICEServer{srv}
}

// urlHost normalises host for use in a stun:/turn: URL: strips a port and
// brackets, unmaps IPv4-mapped IPv6, brackets IPv6 and validates DNS names.
// It reports false for anything that is neither an IP nor a DNS name.
func urlHost(host string) (string, bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			return "", false
		}
		ip = ip.Unmap()
		if ip.Is4() {
			return ip.String(), true
		}

		return "[" + ip.String() + "]", true
	}
	if !isDNSName(host) {
		return "", false
	}

	return strings.ToLower(host), true
}

// isDNSName reports whether s is a syntactically valid DNS host name.
func isDNSName(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if !isDNSLabel(label) {
			return false
		}
	}

	return true
}

func isDNSLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_'
		if !ok {
			return false
		}
	}

	return true
}

// iceURLs builds the stun:, turn: and turns: URLs for host.
func iceURLs(host string, udpPort, tcpPort, tlsPort int) (stun string, turn []string) {
	hp := func(port int) string { return host + ":" + strconv.Itoa(port) }
	stun = "stun:" + hp(udpPort)
	turn = []string{
		"turn:" + hp(udpPort) + "?transport=udp",
		"turn:" + hp(tcpPort) + "?transport=tcp",
	}
	if tlsPort > 0 {
		turn = append(turn, "turns:"+hp(tlsPort)+"?transport=tcp")
	}

	return stun, turn
}
