package signaling

// relayMute passes a participant's microphone/camera state (`mute`, see
// README, Protocol additions) to the other participant of its call, with
// the sender's name. Outside a call it is ignored, like leave.
func (s *Server) relayMute(ss *session, m *Message) {
	s.mu.Lock()
	defer s.mu.Unlock() // sendMsg only enqueues
	cl := ss.call
	if cl == nil || cl.ended {
		return
	}
	cl.other(ss).sendMsg(&Message{Type: typeMute, Name: ss.name, Muted: m.Muted, CameraOff: m.CameraOff})
}
