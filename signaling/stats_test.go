package signaling

import (
	"testing"
	"time"
)

// TestStatsCount: the numbers the metrics are built on follow a session's
// life: users, calls by state, ended calls by reason, messages by type and
// errors by kind.
func TestStatsCount(t *testing.T) {
	e := newEnv(t, nil)
	st := e.srv.Stats()
	if st.UsersOnline != 0 || len(st.CallsEnded) != len(reasons) || len(st.Errors) != len(errKinds) {
		t.Fatalf("empty server: %+v", st)
	}
	a, b := e.login("alice"), e.login("bob")
	a.send(offerMsg("bob", "v=0"))
	a.expect(typeAnswer)
	a.expect(typeCandidate)
	b.expect(typeOffer)
	b.expect(typeCandidate)
	if st := e.srv.Stats(); st.UsersOnline != 2 || st.Connections != 2 || st.CallsRinging != 1 || st.CallsActive != 0 {
		t.Fatalf("ringing: %+v", st)
	}
	b.send(answerMsg("alice", "v=0 callee"))
	a.expect(typeAccepted)
	if st := e.srv.Stats(); st.CallsRinging != 0 || st.CallsActive != 1 || st.CallsStarted != 1 {
		t.Fatalf("accepted: %+v", st)
	}
	a.send(`{"type":"leave"}`)
	if m := b.expect(typeLeave); m.Reason != ReasonHangup {
		t.Fatalf("leave %+v", m)
	}
	a.send(`not json`)
	a.expectError("invalid JSON")
	a.send(`{"type":"dance"}`)
	a.expectError("Command not found")
	a.send(offerMsg("carol", "v=0"))
	a.expectError("not online")
	c := e.dial(nil)
	c.send(offerMsg("bob", "v=0"))
	c.expectError("log in first")

	st = e.srv.Stats()
	want := map[string]uint64{ErrBadMessage: 2, ErrCallRefused: 1, ErrNotLoggedIn: 1, ErrFlood: 0}
	for k, v := range want {
		if st.Errors[k] != v {
			t.Errorf("errors[%s] = %d, want %d", k, st.Errors[k], v)
		}
	}
	if st.CallsEnded[ReasonHangup] != 1 || st.CallsEnded[ReasonDeclined] != 0 || st.CallsActive != 0 {
		t.Errorf("ended %v, active %d", st.CallsEnded, st.CallsActive)
	}
	in := map[string]uint64{typeLogin: 2, typeOffer: 3, typeAnswer: 1, typeLeave: 1, "other": 2}
	for k, v := range in {
		if st.MessagesIn[k] != v {
			t.Errorf("in[%s] = %d, want %d", k, st.MessagesIn[k], v)
		}
	}
	if st.MessagesOut[typeLogin] != 2 || st.MessagesOut[typeAccepted] != 1 || st.MessagesOut[typeError] < 4 ||
		st.MessagesOut[typeLeave] != 1 {
		t.Errorf("out %v", st.MessagesOut)
	}
	// Users lists go out coalesced; at least one per user.
	deadline := time.Now().Add(5 * time.Second)
	for e.srv.Stats().MessagesOut[typeUsers] < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("users lists counted: %d", e.srv.Stats().MessagesOut[typeUsers])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
