package main

import (
	"io"
	"slices"
	"strings"
	"testing"
	"time"
)

func parseWith(args []string, env map[string]string) (Config, error) {
	return parseConfig(args, func(k string) (string, bool) { v, ok := env[k]; return v, ok }, io.Discard)
}

func TestConfigDefaults(t *testing.T) {
	cfg, err := parseWith(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr != ":9090" || cfg.UDPPort != 9090 || cfg.TURNAddr != ":3478" || cfg.RecordDir != "" ||
		cfg.RecordTimeout != 5*time.Minute || cfg.relayPorts != [2]uint16{49152, 65535} {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestConfigFlagsAndEnvironment(t *testing.T) {
	cfg, err := parseWith(
		[]string{"-record-dir", "/srv/rec", "-record-on-finish", "  /usr/bin/upload  --bucket calls ", "-udp-port", "5000"},
		map[string]string{"VIDEOCHAT_UDP_PORT": "6000", "VIDEOCHAT_ALLOWED_ORIGINS": "https://a.example, https://b.example",
			"VIDEOCHAT_RECORD_ON_FINISH_TIMEOUT": "30s", "VIDEOCHAT_MEDIA_READERS": "3"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RecordDir != "/srv/rec" || !slices.Equal(cfg.RecordOnFinish, []string{"/usr/bin/upload", "--bucket", "calls"}) {
		t.Errorf("recording: %q %q", cfg.RecordDir, cfg.RecordOnFinish)
	}
	if cfg.MediaReaders != 3 {
		t.Errorf("media readers %d", cfg.MediaReaders)
	}
	if cfg.UDPPort != 5000 { // the flag wins over the environment
		t.Errorf("udp port %d", cfg.UDPPort)
	}
	if cfg.RecordTimeout != 30*time.Second || !slices.Equal(cfg.AllowedOrigins, []string{"https://a.example", "https://b.example"}) {
		t.Errorf("from the environment: %v %q", cfg.RecordTimeout, cfg.AllowedOrigins)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"-record-on-finish", "upload"}, nil, "needs -record-dir"},
		{[]string{"-record-dir", "d", "-record-on-finish-timeout", "0s"}, nil, "must be positive"},
		{[]string{"-udp-port", "70000"}, nil, "0..65535"},
		{[]string{"-media-readers", "-1"}, nil, "-media-readers must be 0..64"},
		{[]string{"-tls-cert", "c.pem"}, nil, "go together"},
		{[]string{"-public-ip", "example.com"}, nil, "not an IP address"},
		{[]string{"-turn-relay-ports", "9-1"}, nil, "not a range"},
		{[]string{"-log-level", "loud"}, nil, "-log-level"},
		{[]string{"extra"}, nil, "unexpected arguments"},
		{nil, map[string]string{"VIDEOCHAT_UDP_PORT": "x"}, "VIDEOCHAT_UDP_PORT"},
	} {
		_, err := parseWith(tc.args, tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q %v: error %v, want %q", tc.args, tc.env, err, tc.want)
		}
	}
}
