package signaling

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Access control (Config.AuthSecret). When it is on, login carries a
// token: an HS256 JWT signed with the shared secret by the operator's own
// application, whose "sub" is the user name and which has an "exp". The
// server checks it and nothing else about the user; a session token from
// the login reply then proves the login for a resume.

// authLeeway absorbs clock skew between the token issuer and this server.
const authLeeway = 30 * time.Second

// maxTokenLen bounds what is decoded; real tokens are a few hundred bytes.
const maxTokenLen = 8 << 10

// authenticator verifies login tokens. A nil *authenticator is auth off.
type authenticator struct {
	secret []byte
	parser *jwt.Parser
}

// newAuthenticator returns nil when secret is empty (auth off). now is the
// clock used for exp and nbf (time.Now when nil).
func newAuthenticator(secret []byte, now func() time.Time) *authenticator {
	if len(secret) == 0 {
		return nil
	}
	if now == nil {
		now = time.Now
	}
	return &authenticator{
		secret: append([]byte(nil), secret...),
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(authLeeway),
			jwt.WithTimeFunc(now),
		),
	}
}

// authError is a refused token: msg is for the person signing in, err is
// the library's detail, for the log.
type authError struct {
	msg string
	err error
}

func (e *authError) Error() string { return e.msg }
func (e *authError) Unwrap() error { return e.err }

// verify checks that token is a valid, current token for the (cleaned)
// name. The error's text is meant for the person signing in.
func (a *authenticator) verify(token, name string) error {
	if token == "" {
		return &authError{msg: `this server requires a sign-in token: open the link your site gave you (login needs a "token" field)`}
	}
	if len(token) > maxTokenLen {
		return &authError{msg: "the sign-in token is not valid (too long)"}
	}
	var claims jwt.RegisteredClaims
	_, err := a.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return a.secret, nil })
	if err != nil {
		return &authError{msg: tokenProblem(err), err: err}
	}
	sub, err := cleanName(claims.Subject)
	if err != nil || sub != name {
		return &authError{msg: fmt.Sprintf("the sign-in token is not for the name %q; sign in with the name it was issued for", name)}
	}
	return nil
}

// tokenProblem turns the library's error into a sentence a person can act on.
func tokenProblem(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "the sign-in token is malformed (not a well-formed JWT)"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "the sign-in token's signature is not valid (it must be HS256, signed with this server's secret)"
	case errors.Is(err, jwt.ErrTokenExpired):
		return "the sign-in token has expired; get a new link and sign in again"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return "the sign-in token is not valid yet; check the clocks and try again shortly"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return `the sign-in token has no expiry ("exp" is required)`
	}
	return "the sign-in token is not valid"
}

// TokenName checks a sign-in token as login does (HS256 with secret, exp
// required) and returns the name it was issued for, so other endpoints
// (the connection test's TURN credentials) can admit the same people. The
// error's text is meant for a person.
func TokenName(secret []byte, token string) (string, error) {
	a := newAuthenticator(secret, nil)
	if a == nil {
		return "", errors.New("access control is off")
	}
	if token == "" || len(token) > maxTokenLen {
		return "", &authError{msg: "a valid sign-in token is needed"}
	}
	var claims jwt.RegisteredClaims
	if _, err := a.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return a.secret, nil }); err != nil {
		return "", &authError{msg: tokenProblem(err), err: err}
	}
	name, err := cleanName(claims.Subject)
	if err != nil {
		return "", &authError{msg: "the sign-in token names no valid user"}
	}
	return name, nil
}
