package sfu

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/crypto/selfsign"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/srtp/v3"
)

// dtlsPair runs a real pion DTLS handshake over loopback UDP with the
// catcher's hooks on the server (or the client, if catcherIsClient) and
// returns both ends' connections.
func dtlsPair(t *testing.T, k *keyCatcher, catcherIsClient bool, suite dtls.CipherSuiteID,
	profile dtls.SRTPProtectionProfile, ems dtls.ExtendedMasterSecretType,
) (server, client *dtls.Conn) {
	t.Helper()
	cert, err := selfsign.GenerateSelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	cfg := func() *dtls.Config {
		return &dtls.Config{
			Certificates: []tls.Certificate{cert}, InsecureSkipVerify: true,
			CipherSuites: []dtls.CipherSuiteID{suite}, SRTPProtectionProfiles: []dtls.SRTPProtectionProfile{profile},
			ExtendedMasterSecret: ems,
		}
	}
	scfg, ccfg := cfg(), cfg()
	if catcherIsClient {
		ccfg.KeyLogWriter = k
	} else {
		scfg.ServerHelloMessageHook = k.serverHello
		scfg.KeyLogWriter = k
	}
	server, err = dtls.Server(sc, cc.LocalAddr(), scfg)
	if err != nil {
		t.Fatal(err)
	}
	client, err = dtls.Client(cc, sc.LocalAddr(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = server.Close(); _ = client.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() { errc <- server.HandshakeContext(ctx) }()
	if err := client.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	return server, client
}

// pionKeys are pion/srtp's keys for one end of a real DTLS connection.
func pionKeys(t *testing.T, c *dtls.Conn, isClient bool, p srtp.ProtectionProfile) srtp.SessionKeys {
	t.Helper()
	st, ok := c.ConnectionState()
	if !ok {
		t.Fatal("no connection state")
	}
	cfg := srtp.Config{Profile: p}
	if err := cfg.ExtractSessionKeysFromDTLS(&st, isClient); err != nil {
		t.Fatal(err)
	}
	return cfg.Keys
}

// TestSessionKeysMatchPion: over real pion DTLS handshakes (each cipher
// suite an ECDSA certificate allows, each SRTP profile pion/webrtc maps,
// with and without the extended master secret), the keys the hooks derive
// are exactly those pion/srtp extracts from the server's DTLS state, and
// mirror the client's.
func TestSessionKeysMatchPion(t *testing.T) {
	suites := []dtls.CipherSuiteID{
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA, dtls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
	}
	profiles := []dtls.SRTPProtectionProfile{
		dtls.SRTP_AES128_CM_HMAC_SHA1_80, dtls.SRTP_AEAD_AES_128_GCM, dtls.SRTP_AEAD_AES_256_GCM, dtls.SRTP_NULL_HMAC_SHA1_80,
	}
	type tc struct {
		suite   dtls.CipherSuiteID
		profile dtls.SRTPProtectionProfile
		ems     dtls.ExtendedMasterSecretType
	}
	var cases []tc
	for _, s := range suites {
		cases = append(cases, tc{s, dtls.SRTP_AEAD_AES_128_GCM, dtls.RequestExtendedMasterSecret})
	}
	for _, p := range profiles {
		cases = append(cases, tc{dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, p, dtls.RequestExtendedMasterSecret})
	}
	cases = append(cases, tc{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.SRTP_AES128_CM_HMAC_SHA1_80, dtls.DisableExtendedMasterSecret})
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%#04x/ems%d", dtls.CipherSuiteName(c.suite), uint16(c.profile), c.ems), func(t *testing.T) {
			k := &keyCatcher{}
			server, client := dtlsPair(t, k, false, c.suite, c.profile, c.ems)
			if k.keys() != nil {
				t.Fatal("keys published before connected")
			}
			k.connected()
			got := k.keys()
			if got == nil {
				t.Fatal("no keys")
			}
			want, _ := srtpProfile(c.profile)
			if got.profile != want {
				t.Fatalf("profile %v, want %v", got.profile, want)
			}
			sk := pionKeys(t, server, false, want)
			ck := pionKeys(t, client, true, want)
			for _, x := range []struct {
				name      string
				got, want []byte
			}{
				{"remote key", got.remoteKey, sk.RemoteMasterKey}, {"remote salt", got.remoteSalt, sk.RemoteMasterSalt},
				{"local key", got.localKey, sk.LocalMasterKey}, {"local salt", got.localSalt, sk.LocalMasterSalt},
				{"client's local key", got.remoteKey, ck.LocalMasterKey}, {"client's remote key", got.localKey, ck.RemoteMasterKey},
			} {
				if len(x.got) == 0 || !bytes.Equal(x.got, x.want) {
					t.Errorf("%s %x, want %x", x.name, x.got, x.want)
				}
			}
		})
	}
}

// TestSessionKeysNoneAsDTLSClient: when the catcher's side is the DTLS
// client it sees a key log line but never a ServerHello: no keys.
func TestSessionKeysNoneAsDTLSClient(t *testing.T) {
	k := &keyCatcher{}
	dtlsPair(t, k, true, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.SRTP_AEAD_AES_128_GCM, dtls.RequestExtendedMasterSecret)
	k.connected()
	if k.keys() != nil {
		t.Fatal("keys as DTLS client")
	}
}

// TestDeriveSessionKeysRejects: bad inputs give an error, never a panic.
func TestDeriveSessionKeysRejects(t *testing.T) {
	r := make([]byte, 32)
	m := make([]byte, 48)
	for name, f := range map[string]func() (*sessionKeys, error){
		"short client random": func() (*sessionKeys, error) {
			return deriveSessionKeys(m, r[:31], r, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.SRTP_AEAD_AES_128_GCM)
		},
		"empty master": func() (*sessionKeys, error) {
			return deriveSessionKeys(nil, r, r, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.SRTP_AEAD_AES_128_GCM)
		},
		"unknown suite": func() (*sessionKeys, error) {
			return deriveSessionKeys(m, r, r, dtls.TLS_PSK_WITH_AES_128_CCM, dtls.SRTP_AEAD_AES_128_GCM)
		},
		"unknown profile": func() (*sessionKeys, error) {
			return deriveSessionKeys(m, r, r, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, dtls.SRTP_AES128_CM_HMAC_SHA1_32)
		},
	} {
		if k, err := f(); err == nil || k != nil {
			t.Errorf("%s: keys %v, err %v", name, k, err)
		}
	}
	k, err := deriveSessionKeys(m, r, r, dtls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, dtls.SRTP_AEAD_AES_256_GCM)
	if err != nil || len(k.remoteKey) != 32 || len(k.remoteSalt) != 12 || len(k.localKey) != 32 || len(k.localSalt) != 12 {
		t.Fatalf("AES-256-GCM: %+v %v", k, err)
	}
}

// TestKeyLogParsing: key log lines split across writes still give keys;
// malformed, overlong or foreign lines give none and never panic.
func TestKeyLogParsing(t *testing.T) {
	suite := uint16(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256)
	hello := func(k *keyCatcher) {
		m := helloMessage(suite, dtls.SRTP_AES128_CM_HMAC_SHA1_80)
		k.serverHello(m)
	}
	good := "CLIENT_RANDOM " + fmt.Sprintf("%064x", 7) + " " + fmt.Sprintf("%096x", 9) + "\n"
	t.Run("split", func(t *testing.T) {
		k := &keyCatcher{}
		hello(k)
		for i := range len(good) {
			if n, err := k.Write([]byte{good[i]}); n != 1 || err != nil {
				t.Fatal(n, err)
			}
		}
		k.connected()
		if k.keys() == nil {
			t.Fatal("no keys from a line written byte by byte")
		}
	})
	for name, line := range map[string]string{
		"no hello":     "",
		"label":        "SERVER_RANDOM 00 00\n",
		"fields":       "CLIENT_RANDOM 00\n",
		"hex":          "CLIENT_RANDOM zz 00\n",
		"short random": "CLIENT_RANDOM 0000 0000\n",
		"overlong":     "CLIENT_RANDOM " + string(bytes.Repeat([]byte{'0'}, 600)) + "\n",
		"unended":      good[:len(good)-1],
	} {
		t.Run(name, func(t *testing.T) {
			k := &keyCatcher{}
			if name != "no hello" {
				hello(k)
			} else {
				line = good
			}
			if n, err := k.Write([]byte(line)); n != len(line) || err != nil {
				t.Fatal(n, err)
			}
			k.connected()
			if k.keys() != nil {
				t.Fatal("keys from a bad line")
			}
		})
	}
	t.Run("overlong then good", func(t *testing.T) {
		k := &keyCatcher{}
		hello(k)
		_, _ = k.Write(bytes.Repeat([]byte{'x'}, 2000))
		_, _ = k.Write([]byte("\n" + good))
		k.connected()
		if k.keys() == nil {
			t.Fatal("a good line after an overlong one gave no keys")
		}
	})
}

// helloMessage is a ServerHello choosing suite and profile.
func helloMessage(suite uint16, profile dtls.SRTPProtectionProfile) handshake.MessageServerHello {
	m := handshake.MessageServerHello{CipherSuiteID: &suite,
		Extensions: []extension.Extension{&extension.UseSRTP{ProtectionProfiles: []dtls.SRTPProtectionProfile{profile}}}}
	_ = m.Random.Populate()
	return m
}
