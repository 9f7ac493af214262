package main

import (
	"context"
	"testing"
	"time"

	"videochat/signaling"
	"videochat/turn"
)

// iceFrom converts a TURN package ICE source for the login reply.
func iceFrom(src turn.ICEServerSource) func(user, host string) []signaling.ICEServer {
	return func(user, host string) []signaling.ICEServer {
		var out []signaling.ICEServer
		for _, s := range src.ICEServers(user, host) {
			out = append(out, signaling.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
		}
		return out
	}
}

// TestTURNCompare runs two relay-only calls through coturn (started as
// -turn-compare starts it: no configuration file, the REST secret) and
// through our TURN server, and checks that both relay the load and that
// coturn's CPU per relayed packet is measured. It takes about 8 s.
func TestTURNCompare(t *testing.T) {
	secret, err := newSecret()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tp, err := startCoturn(ctx, secret, "")
	if err != nil {
		t.Fatal(err) // make deps installs coturn
	}
	defer tp.close()

	rows := map[string]Row{}
	run := func(name string, turnPID int, ice func(mediaPort int) func(user, host string) []signaling.ICEServer) {
		o := testOptions()
		o.URL = startInProcessICE(t, ice)
		o.RelayOnly = true
		o.Measure = 2 * time.Second
		srv, stop, err := serverTarget(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		defer stop()
		srv.name, srv.turnPID = name, turnPID
		r, err := measure(ctx, o, srv, o.Steps)
		if err != nil || len(r) != 1 {
			t.Fatalf("%s: rows %+v, %v", name, r, err)
		}
		t.Logf("%s", r[0].line())
		rows[name] = r[0]
	}
	run("coturn", tp.pid(), func(int) func(user, host string) []signaling.ICEServer {
		return iceFrom(turn.External{URLs: []string{tp.url}, Secret: []byte(secret)})
	})
	run("turn", 0, func(mediaPort int) func(user, host string) []signaling.ICEServer {
		s, err := newOurTURN(secret, mediaPort)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		return iceFrom(turn.External{URLs: []string{"turn:" + s.UDPAddr().String() + "?transport=udp"}, Secret: []byte(secret)})
	})
	for name, r := range rows {
		// Two calls carry ~700 forwarded packets/s (1,400 relayed); loss
		// beyond 2 % would mean the relay path is broken, not loaded.
		if r.Failed > 0 || r.FwdPPS < 500 || r.Loss > 0.02 || r.Corrupt > 0 {
			t.Errorf("%s: %d failed, %.0f packets/s, loss %.2f %%, %d corrupt", name, r.Failed, r.FwdPPS, 100*r.Loss, r.Corrupt)
		}
	}
	if c := rows["coturn"]; c.TURNCPUPercent <= 0 || c.TURNPerPktUS <= 0 {
		t.Errorf("coturn's CPU not measured: %.1f %%, %.2f µs/relayed packet", c.TURNCPUPercent, c.TURNPerPktUS)
	}
}
