// Command videochat is a video chat server: open its page in two browsers,
// sign in with two names, and call one from the other. Media flows through
// the server's SFU; an embedded TURN server gets calls through firewalls.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "videochat:", err)
		}
		os.Exit(2)
	}
}

func run() error {
	cfg, err := parseConfig(os.Args[1:], envLookup, os.Stderr)
	if err != nil {
		return err
	}
	log := newLogger(cfg, os.Stderr)
	log.Info("garbage collector", "policy", cfg.GC.apply(envLookup))
	raiseFileLimit(log)
	app, err := NewApp(cfg, log)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- app.Serve() }()
	app.logListeners()
	if cfg.MetricsAddr == "" {
		log.Info("Prometheus metrics (for clients on this host only; see -metrics-addr)", "url", app.MetricsURL())
	} else {
		log.Info("Prometheus metrics", "url", app.MetricsURL())
	}
	log.Info("videochat is running; open this in two browser tabs", "url", app.URL())
	app.printHTTPS(os.Stderr)

	select {
	case err = <-served:
	case <-ctx.Done():
		log.Info("shutting down")
	}
	closeCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownDelay+5*time.Second)
	defer cancel()
	return errors.Join(err, app.Close(closeCtx))
}
