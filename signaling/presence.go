package signaling

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

// Presence: logins and logouts only mark the list changed (presenceChanged).
// One goroutine owned by the Server (runPresence) builds the list at most
// once per PresenceInterval and hands the same frame to every session,
// which keeps at most one pending list per connection (the newest replaces
// the one not yet written). So a storm of N logins costs each client a few
// frames per second, not N frames, and never fills its send queue.
//
// The list is capped at MaxUsersListed names (the first ones in sorted
// order) and carries "total", the number of people online: at 10,000 users
// a full list to everyone on every change would be 10,000² names.

// presenceChanged asks for a users list to be sent soon. It never blocks.
func (s *Server) presenceChanged() {
	select {
	case s.presenceKick <- struct{}{}:
	default:
	}
}

// runPresence sends lists until stop is closed. The first change after a
// quiet interval is sent at once; changes within the interval after a send
// are coalesced into one list at its end.
func (s *Server) runPresence(stop <-chan struct{}) {
	defer func() {
		if recovered(s.log, recover(), "presence") {
			go s.runPresence(stop) // keep presence going; the panic is logged
			return
		}
		close(s.presenceDone)
	}()
	for {
		select {
		case <-stop:
			return
		case <-s.presenceKick:
		}
		s.sendPresence()
		t := time.NewTimer(s.cfg.PresenceInterval)
		select {
		case <-stop:
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// sendPresence builds the current list and gives it to every session,
// unless it is the one sent last.
func (s *Server) sendPresence() {
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.names))
	names := make([]string, 0, len(s.names))
	for _, ss := range s.names {
		sessions = append(sessions, ss)
		names = append(names, ss.name)
	}
	s.mu.Unlock()
	frame := usersFrame(names, s.cfg.MaxUsersListed)
	s.mu.Lock()
	same := bytes.Equal(frame, s.lastUsers)
	s.lastUsers = frame
	s.mu.Unlock()
	if same {
		return
	}
	for _, ss := range sessions {
		ss.enqueueUsers(frame)
	}
}

// currentUsers is the list sent last (for a resumed connection).
func (s *Server) currentUsers() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lastUsers
}

// usersFrame encodes {"type":"users","users":[first max names, sorted],"total":n}.
func usersFrame(names []string, max int) []byte {
	total := len(names)
	if max > 0 && len(names) > max {
		// Only the first max in sorted order are listed.
		slices.Sort(names)
		names = names[:max]
	} else {
		slices.Sort(names)
	}
	var b bytes.Buffer
	b.WriteString(`{"type":"users","users":[`)
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		enc, _ := json.Marshal(n)
		b.Write(enc)
	}
	b.WriteString(`],"total":`)
	b.WriteString(strconv.Itoa(total))
	b.WriteByte('}')
	return b.Bytes()
}
