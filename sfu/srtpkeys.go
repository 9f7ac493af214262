package sfu

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/srtp/v3"
	"github.com/pion/webrtc/v4"
)

// The SRTP master keys of a participant's PeerConnection, which pion keeps
// to itself. They come from hooks pion offers on each PeerConnection's
// SettingEngine (newPeerAPI): the SFU is always the DTLS server
// (newSettingEngine), so its own ServerHello carries the server random, the
// chosen cipher suite (whose hash the PRF uses) and the use_srtp profile;
// the key log gives the client random and the master secret. The keys are
// the RFC 5705 exporter's output, split as RFC 5764 section 4.2 says (and
// as pion/srtp's ExtractSessionKeysFromDTLS does).

// sessionKeys are the SRTP master keys of one PeerConnection, seen from the
// SFU (the DTLS server): the remote (client) write key decrypts what the
// client sends, the local (server) write key encrypts what the SFU sends.
// Never modified once built.
type sessionKeys struct {
	profile               srtp.ProtectionProfile
	remoteKey, remoteSalt []byte
	localKey, localSalt   []byte
}

// srtpExporterLabel is RFC 5764's exporter label.
const srtpExporterLabel = "EXTRACTOR-dtls_srtp"

var (
	errUnknownSuite   = errors.New("srtpkeys: unknown cipher suite")
	errUnknownProfile = errors.New("srtpkeys: unknown SRTP protection profile")
	errRandomLength   = errors.New("srtpkeys: random is not 32 bytes")
	errNoMaster       = errors.New("srtpkeys: empty master secret")
)

// suiteHash is the PRF hash of a DTLS 1.2 cipher suite pion's dtls/v3
// implements with certificates (what WebRTC negotiates): SHA-384 for the
// *_SHA384 suites, SHA-256 for every other (pion's HashFunc, v3.1.8).
func suiteHash(id dtls.CipherSuiteID) (prf.HashFunc, error) {
	switch id { //nolint:exhaustive // only what WebRTC can negotiate
	case dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384:
		return sha512.New384, nil
	case dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, dtls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
		dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, dtls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8:
		return sha256.New, nil
	}
	return nil, fmt.Errorf("%w: %#04x", errUnknownSuite, uint16(id))
}

// srtpProfile maps a use_srtp profile to SRTP's, as pion/webrtc does
// (srtpProtectionProfileFromDTLS): only the profiles pion can run.
func srtpProfile(p dtls.SRTPProtectionProfile) (srtp.ProtectionProfile, error) {
	switch p { //nolint:exhaustive // only what pion/webrtc maps
	case dtls.SRTP_AEAD_AES_128_GCM:
		return srtp.ProtectionProfileAeadAes128Gcm, nil
	case dtls.SRTP_AEAD_AES_256_GCM:
		return srtp.ProtectionProfileAeadAes256Gcm, nil
	case dtls.SRTP_AES128_CM_HMAC_SHA1_80:
		return srtp.ProtectionProfileAes128CmHmacSha1_80, nil
	case dtls.SRTP_NULL_HMAC_SHA1_80:
		return srtp.ProtectionProfileNullHmacSha1_80, nil
	}
	return 0, fmt.Errorf("%w: %#04x", errUnknownProfile, uint16(p))
}

// deriveSessionKeys computes the SRTP master keys of a DTLS 1.2 session in
// which the SFU is the server: the TLS exporter (RFC 5705)
// PRF(master, "EXTRACTOR-dtls_srtp", client_random || server_random) with
// the suite's hash, 2*(key+salt) bytes, laid out as client key, server
// key, client salt, server salt (RFC 5764 4.2).
func deriveSessionKeys(master, clientRandom, serverRandom []byte, suite dtls.CipherSuiteID,
	profile dtls.SRTPProtectionProfile,
) (*sessionKeys, error) {
	if len(clientRandom) != handshake.RandomLength || len(serverRandom) != handshake.RandomLength {
		return nil, errRandomLength
	}
	if len(master) == 0 {
		return nil, errNoMaster
	}
	h, err := suiteHash(suite)
	if err != nil {
		return nil, err
	}
	p, err := srtpProfile(profile)
	if err != nil {
		return nil, err
	}
	keyLen, err := p.KeyLen()
	if err != nil {
		return nil, err
	}
	saltLen, err := p.SaltLen()
	if err != nil {
		return nil, err
	}
	seed := make([]byte, 0, len(srtpExporterLabel)+2*handshake.RandomLength)
	seed = append(append(append(seed, srtpExporterLabel...), clientRandom...), serverRandom...)
	km, err := prf.PHash(master, seed, 2*(keyLen+saltLen), h)
	if err != nil {
		return nil, err
	}
	clientKey := km[:keyLen]
	serverKey := km[keyLen : 2*keyLen]
	clientSalt := km[2*keyLen : 2*keyLen+saltLen]
	serverSalt := km[2*keyLen+saltLen:]
	return &sessionKeys{profile: p,
		remoteKey: clientKey, remoteSalt: clientSalt,
		localKey: serverKey, localSalt: serverSalt}, nil
}

// keyCatcher gathers one PeerConnection's handshake secrets from pion's
// DTLS hooks (called on pion's handshake goroutine) and publishes the keys
// once the DTLS transport is connected. It never fails the handshake: on
// anything unexpected the PeerConnection just has no keys.
type keyCatcher struct {
	mu       sync.Mutex
	hello    bool // a ServerHello went out: the SFU is the DTLS server
	server   [handshake.RandomLength]byte
	suite    dtls.CipherSuiteID
	profile  dtls.SRTPProtectionProfile // 0: none or unusable (MKI)
	derived  *sessionKeys               // from the key log, not yet confirmed
	line     []byte                     // a key log line not yet ended
	lineLost bool                       // a line overflowed: ignore it

	ready atomic.Pointer[sessionKeys] // set when DTLS is connected
}

// maxKeyLogLine bounds a buffered key log line (pion's are 162 bytes).
const maxKeyLogLine = 512

// install adds the catcher's hooks to a PeerConnection's SettingEngine.
func (k *keyCatcher) install(se *webrtc.SettingEngine) {
	se.SetDTLSServerHelloMessageHook(k.serverHello)
	se.SetDTLSKeyLogWriter(k)
}

// serverHello records what the key export needs from the SFU's
// ServerHello and returns the message unchanged.
func (k *keyCatcher) serverHello(m handshake.MessageServerHello) handshake.Message {
	var profile dtls.SRTPProtectionProfile
	for _, e := range m.Extensions {
		u, _ := e.(*extension.UseSRTP)
		// An MKI would be on every SRTP packet; pion sets none. Without
		// exactly one profile there is nothing to export.
		if u != nil && len(u.ProtectionProfiles) == 1 && len(u.MasterKeyIdentifier) == 0 {
			profile = u.ProtectionProfiles[0]
		}
	}
	k.mu.Lock()
	k.hello = m.CipherSuiteID != nil
	if k.hello {
		k.server = m.Random.MarshalFixed()
		k.suite = dtls.CipherSuiteID(*m.CipherSuiteID)
	}
	k.profile = profile
	k.derived = nil // a new ServerHello: an older key log line is stale
	k.mu.Unlock()
	return &m
}

// Write takes pion's key log ("CLIENT_RANDOM <client random> <master
// secret>\n", one line per handshake). The secret never leaves the
// process: only the derived keys are kept (pion keeps the same in its SRTP
// contexts). It never returns an error: pion would only log it.
func (k *keyCatcher) Write(b []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for rest := b; len(rest) > 0; {
		i := bytes.IndexByte(rest, '\n')
		if i < 0 {
			k.buffer(rest)
			break
		}
		k.buffer(rest[:i])
		if !k.lineLost {
			k.keyLogLine(k.line)
		}
		clear(k.line) // the master secret, in hex: keep no copy
		k.line, k.lineLost = k.line[:0], false
		rest = rest[i+1:]
	}
	return len(b), nil
}

func (k *keyCatcher) buffer(b []byte) {
	if len(k.line)+len(b) > maxKeyLogLine {
		k.lineLost = true
		return
	}
	k.line = append(k.line, b...)
}

// keyLogLine derives the keys from one complete line (k.mu held). A line
// that does not parse, or a handshake without our ServerHello (the SFU was
// the DTLS client), leaves no keys.
func (k *keyCatcher) keyLogLine(line []byte) {
	k.derived = nil
	f := bytes.Fields(line)
	if len(f) != 3 || string(f[0]) != "CLIENT_RANDOM" || !k.hello {
		return
	}
	client, err1 := hex.DecodeString(string(f[1]))
	master, err2 := hex.DecodeString(string(f[2]))
	if err1 != nil || err2 != nil {
		return
	}
	keys, err := deriveSessionKeys(master, client, k.server[:], k.suite, k.profile)
	clear(master)
	if err != nil {
		return
	}
	k.derived = keys
}

// connected publishes the derived keys: the handshake they came from has
// completed (pion reports DTLS connected before it reports the
// PeerConnection connected).
func (k *keyCatcher) connected() {
	k.mu.Lock()
	keys := k.derived
	k.mu.Unlock()
	if keys != nil {
		k.ready.Store(keys)
	}
}

// keys returns the published keys, or nil.
func (k *keyCatcher) keys() *sessionKeys { return k.ready.Load() }

// peerHooks are the handles one participant keeps on the per-PeerConnection
// parts that its own API (newPeerAPI) builds.
type peerHooks struct {
	keys   keyCatcher
	twcc   atomic.Pointer[twccFeedback] // set by twccFeedbackFactory
	resend *resendLimit                 // the nackResponder's, fed by the estimator
	tx     atomic.Pointer[txSender]     // the send fast path (txfast.go); nil: off
	rtcp   atomic.Pointer[rtcpChain]    // the interceptors' RTCP chain (rtcpfast.go); nil: off or not bound yet
}
