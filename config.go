package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
)

// Config is everything the program can be told, from flags or from the
// environment (VIDEOCHAT_<FLAG>, dashes as underscores; flags win).
type Config struct {
	Addr           string   // HTTP(S) listen address
	UDPPort        int      // the media port
	PublicIP       string   // the address clients reach us at (1:1 NAT)
	TURNAddr       string   // embedded TURN (UDP+TCP); empty disables
	AllowedOrigins []string // extra origins for the WebSocket
	LogLevel       slog.Level

	// Not flags: for tests.
	IncludeLoopback bool // offer loopback media candidates (auto when the host has nothing else)
}

// parseConfig reads flags (args without the program name) and environment.
func parseConfig(args []string, env func(string) (string, bool), stderr io.Writer) (Config, error) {
	var cfg Config
	var origins, level string
	fs := flag.NewFlagSet("videochat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Addr, "addr", ":9090", "HTTP listen address (web app and WebSocket)")
	fs.IntVar(&cfg.UDPPort, "udp-port", 9090, "UDP port for all media (0 = ephemeral)")
	fs.StringVar(&cfg.PublicIP, "public-ip", "", "public IP address to advertise when behind 1:1 NAT")
	fs.StringVar(&cfg.TURNAddr, "turn-addr", ":3478", "embedded TURN server address, UDP and TCP (empty disables)")
	fs.StringVar(&origins, "allowed-origins", "", "comma-separated extra origins allowed to open the WebSocket")
	fs.StringVar(&level, "log-level", "info", "log level: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: videochat [flags]\n\nEvery flag can also be set as VIDEOCHAT_<FLAG> (e.g. VIDEOCHAT_ADDR).\n\n")
		fs.PrintDefaults()
	}
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		name := "VIDEOCHAT_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := env(name); ok {
			if err := f.Value.Set(v); err != nil && envErr == nil {
				envErr = fmt.Errorf("%s=%q: %w", name, v, err)
			}
		}
	})
	if envErr != nil {
		return cfg, envErr
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	if err := cfg.LogLevel.UnmarshalText([]byte(level)); err != nil {
		return cfg, fmt.Errorf("-log-level: %w", err)
	}
	if cfg.UDPPort < 0 || cfg.UDPPort > 65535 {
		return cfg, errors.New("-udp-port must be 0..65535")
	}
	for _, o := range strings.Split(origins, ",") {
		if o = strings.TrimSpace(o); o != "" {
			cfg.AllowedOrigins = append(cfg.AllowedOrigins, o)
		}
	}
	return cfg, nil
}

func envLookup(name string) (string, bool) { return os.LookupEnv(name) }
