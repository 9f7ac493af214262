package signaling

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/pion/webrtc/v4"
)

// Message is every frame of the protocol, both directions (PROTOCOL.md).
// Pion's SessionDescription and ICECandidateInit have the browser's shapes.
type Message struct {
	Type       string                     `json:"type"`
	Name       string                     `json:"name,omitempty"`
	Offer      *webrtc.SessionDescription `json:"offer,omitempty"`
	Answer     *webrtc.SessionDescription `json:"answer,omitempty"`
	Candidate  *webrtc.ICECandidateInit   `json:"candidate,omitempty"`
	Success    *bool                      `json:"success,omitempty"`
	Message    string                     `json:"message,omitempty"`
	ICEServers []ICEServer                `json:"iceServers,omitzero"`
	Reason     string                     `json:"reason,omitempty"`
	Users      []string                   `json:"users,omitzero"`
	// Total (additive) is the number of people online, on users (the list
	// itself is capped; see README, Protocol additions).
	Total int `json:"total,omitempty"`
	// Recording (additive) is true on `recording` (to both participants,
	// when recording starts: after the callee accepted) and on accepted.
	Recording bool `json:"recording,omitempty"`
	// Session (additive) is the resume token: in the login and resume
	// replies, and in a client's resume request.
	Session string `json:"session,omitempty"`
	// Call (additive) names the other participant in a resume reply.
	Call string `json:"call,omitempty"`
	// State (additive) is a callstate's "reconnecting" or "connected".
	State string `json:"state,omitempty"`
	// Token (additive) is a login's JWT when the server requires one.
	Token string `json:"token,omitempty"`
	// Muted and CameraOff (additive) are a participant's microphone and
	// camera state, on `mute` (sent by a client during a call, relayed to
	// the other participant with the sender's name).
	Muted     bool `json:"muted,omitempty"`
	CameraOff bool `json:"cameraOff,omitempty"`
}

// ICEServer is one entry of the login reply's iceServers (RTCIceServer).
type ICEServer struct {
	URLs       []string `json:"urls"`
	Username   string   `json:"username,omitempty"`
	Credential string   `json:"credential,omitempty"`
}

// Message types.
const (
	typeLogin     = "login"
	typeOffer     = "offer"
	typeAnswer    = "answer"
	typeCandidate = "candidate"
	typeLeave     = "leave"
	typeAccepted  = "accepted"
	typeRecording = "recording"
	typeError     = "error"
	typeUsers     = "users"
	typeResume    = "resume"
	typePing      = "ping"
	typePong      = "pong"
	typeCallstate = "callstate"
	typeMute      = "mute"
)

// States carried by callstate.
const (
	callReconnecting = "reconnecting"
	callConnected    = "connected"
)

// Reasons carried by leave.
const (
	ReasonHangup   = "hangup"
	ReasonDeclined = "declined"
	ReasonNoAnswer = "no answer"
	ReasonBusy     = "busy"
	ReasonGone     = "disconnected"
	ReasonFailed   = "connection failed"
	ReasonShutdown = "server shutting down"
	maxNameRunes   = 64
)

// parseMessage decodes one client frame and checks the fields its type
// needs. The error text is meant for the person at the other end.
func parseMessage(data []byte) (*Message, error) {
	var probe struct {
		Type json.RawMessage `json:"type"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return nil, errors.New("invalid JSON: each frame must be one JSON object")
	}
	var typ string
	if len(probe.Type) == 0 || json.Unmarshal(probe.Type, &typ) != nil {
		return nil, errors.New(`every message needs a string field "type"`)
	}
	switch typ {
	case typeLogin, typeOffer, typeAnswer, typeCandidate, typeLeave, typeResume, typePing, typeMute:
	default:
		return nil, fmt.Errorf("Command not found: %s", typ)
	}
	var m Message
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fieldError(typ, err)
	}
	return &m, checkFields(&m)
}

func fieldError(typ string, err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) && te.Field != "" {
		return fmt.Errorf("%s: field %q has the wrong type (want %s)", typ, te.Field, te.Type)
	}
	return fmt.Errorf("%s: malformed message: %v", typ, err)
}

func checkFields(m *Message) error {
	switch m.Type {
	case typeOffer:
		if m.Name == "" {
			return errors.New(`offer: missing field "name" (whom to call)`)
		}
		return checkDescription(m.Type, m.Offer, webrtc.SDPTypeOffer)
	case typeAnswer:
		return checkDescription(m.Type, m.Answer, webrtc.SDPTypeAnswer)
	case typeResume:
		if m.Session == "" {
			return errors.New(`resume: missing field "session" (the token from the login reply)`)
		}
	}
	return nil
}

func checkDescription(typ string, d *webrtc.SessionDescription, want webrtc.SDPType) error {
	if d == nil {
		return fmt.Errorf("%s: missing field %q", typ, typ)
	}
	if d.Type != want {
		return fmt.Errorf("%s: %s.type must be %q", typ, typ, want.String())
	}
	if strings.TrimSpace(d.SDP) == "" {
		return fmt.Errorf("%s: %s.sdp is empty", typ, typ)
	}
	return nil
}

func jsonFrame(m *Message) ([]byte, error) { return json.Marshal(m) }
