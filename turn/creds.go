package turn

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // HMAC-SHA1 is what the TURN REST / coturn scheme specifies
	"encoding/base64"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	pturn "github.com/pion/turn/v4"
)

// maxUsernameLen bounds accepted usernames (STUN allows up to 513 bytes).
const maxUsernameLen = 513

// Credentials returns coturn-compatible TURN REST credentials for user,
// valid until now+ttl: username "<unix-expiry>:<user>" (just "<unix-expiry>"
// if user is empty) and password base64(HMAC-SHA1(secret, username)).
func Credentials(secret []byte, user string, ttl time.Duration, now time.Time) (username, password string) {
	username = strconv.FormatInt(now.Add(ttl).Unix(), 10)
	if user != "" {
		username += ":" + user
	}

	return username, restPassword(secret, username)
}

func restPassword(secret []byte, username string) string {
	mac := hmac.New(sha1.New, secret)
	_, _ = mac.Write([]byte(username)) // hash.Hash.Write never fails

	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// parseExpiry parses the expiry of a TURN REST username "<unix-expiry>" or
// "<unix-expiry>:<user>". The expiry must be plain decimal digits.
func parseExpiry(username string) (time.Time, bool) {
	if username == "" || len(username) > maxUsernameLen {
		return time.Time{}, false
	}
	ts, _, _ := strings.Cut(username, ":")
	if ts == "" || len(ts) > 18 {
		return time.Time{}, false
	}
	for _, r := range ts {
		if r < '0' || r > '9' {
			return time.Time{}, false
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return time.Time{}, false
	}

	return time.Unix(sec, 0), true
}

// restAuthHandler is a pion AuthHandler for TURN REST credentials. Unlike
// pion's LongTermTURNRESTAuthHandler it rejects non-digit expiries and other
// realms, and logs failures at Debug (pion logs them at Error, which lets
// any client write to the error log).
func restAuthHandler(secret []byte, serverRealm string, log *slog.Logger) pturn.AuthHandler {
	return func(username, realm string, src net.Addr) ([]byte, bool) {
		expiry, ok := parseExpiry(username)
		switch {
		case !ok:
			log.Debug("turn: auth refused: malformed username", "remote", addrString(src))

			return nil, false
		case realm != serverRealm:
			log.Debug("turn: auth refused: wrong realm", "remote", addrString(src))

			return nil, false
		case time.Now().After(expiry):
			log.Debug("turn: auth refused: expired credentials", "remote", addrString(src), "username", username)

			return nil, false
		}

		return pturn.GenerateAuthKey(username, realm, restPassword(secret, username)), true
	}
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}

	return a.String()
}
