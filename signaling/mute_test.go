package signaling

import (
	"testing"
	"time"
)

func TestMuteIsRelayedInCallOnly(t *testing.T) {
	e := newEnv(t, nil)
	a, b := e.login("alice"), e.login("bob")
	// Outside a call: no error, nothing relayed.
	a.send(`{"type":"mute","muted":true}`)
	b.quiet(100 * time.Millisecond)
	a.quiet(100 * time.Millisecond)

	e.connect(a, b, "alice", "bob")
	a.send(`{"type":"mute","muted":true,"cameraOff":false}`)
	if m := b.expect(typeMute); m.Name != "alice" || !m.Muted || m.CameraOff {
		t.Fatalf("relayed mute: %+v", m)
	}
	b.send(`{"type":"mute","cameraOff":true}`)
	if m := a.expect(typeMute); m.Name != "bob" || m.Muted || !m.CameraOff {
		t.Fatalf("relayed mute: %+v", m)
	}
	a.send(`{"type":"mute","muted":"yes"}`)
	a.expectError(`field "muted" has the wrong type`)
}
