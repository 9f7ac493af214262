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
// a full list to everyone on every change would be 10,000² names. When only
// the total changed, the list waits for PresenceTotalInterval.

// presenceChanged asks for a users list to be sent soon. It never blocks.
func (s *Server) presenceChanged() {
	s.cfg.Cluster.LocalChanged()
	select {
	case s.presenceKick <- struct{}{}:
	default:
	}
}

// runPresence sends lists until stop is closed. The first change after a
// quiet interval is sent at once; changes within PresenceInterval after a
// send are coalesced into one list at its end. A change of the count alone
// (the capped list itself is the same) waits for PresenceTotalInterval:
// with thousands online, logins beyond the listed names cost little.
func (s *Server) runPresence(stop <-chan struct{}) {
	defer func() {
		if recovered(s.log, recover(), "presence") {
			go s.runPresence(stop) // keep presence going; the panic is logged
			return
		}
		close(s.presenceDone)
	}()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var (
		lastSent time.Time
		lastList []byte    // the frame sent last, without its total
		next     time.Time // no list is built before this
		dirty    bool
	)
	for {
		select {
		case <-stop:
			return
		case <-s.presenceKick:
			dirty = true
		case <-timer.C:
		}
		now := time.Now()
		if !dirty {
			continue
		}
		if now.Before(next) {
			timer.Reset(next.Sub(now))
			continue
		}
		frame, list := s.buildPresence()
		if bytes.Equal(frame, s.currentUsers()) {
			dirty = false
			continue
		}
		if bytes.Equal(list, lastList) && now.Sub(lastSent) < s.cfg.PresenceTotalInterval {
			next = lastSent.Add(s.cfg.PresenceTotalInterval)
			timer.Reset(next.Sub(now))
			continue
		}
		dirty = false
		lastSent, lastList, next = now, list, now.Add(s.cfg.PresenceInterval)
		s.sendPresence(frame)
	}
}

// buildPresence returns the current users frame and its list part.
func (s *Server) buildPresence() (frame, list []byte) {
	s.mu.Lock()
	names := make([]string, 0, len(s.names))
	for _, ss := range s.names {
		names = append(names, ss.name)
	}
	s.mu.Unlock()
	names = s.withRemoteUsers(names)
	frame = usersFrame(names, s.cfg.MaxUsersListed)
	return frame, frame[:bytes.LastIndex(frame, []byte(`,"total":`))]
}

// sendPresence gives frame to every session, unless it is the one sent last.
func (s *Server) sendPresence(frame []byte) {
	for _, ss := range s.presenceTargets(frame) {
		s.count.msgOut(typeUsers)
		ss.enqueueUsers(frame)
	}
}

// presenceTargets records frame as the list sent last and returns the
// sessions to send it to: none if it was already sent.
func (s *Server) presenceTargets(frame []byte) []*session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.Equal(frame, s.lastUsers) {
		return nil
	}
	s.lastUsers = frame
	sessions := make([]*session, 0, len(s.names))
	for _, ss := range s.names {
		sessions = append(sessions, ss)
	}
	for _, ss := range s.roam.stubs { // resumed here, sessions elsewhere (roam.go)
		sessions = append(sessions, ss)
	}
	return sessions
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
