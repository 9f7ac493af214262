package main

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/pion/webrtc/v4"

	"videochat/sfu"
	"videochat/signaling"
)

// The connectivity page (/diag, static/diag.html) tests from the user's
// browser what their network lets through: the WebSocket (it pings /ws),
// UDP and TCP straight to the SFU, and TURN over UDP, TCP and TLS. Two
// endpoints serve it:
//
//	GET  /diag/ice    {"iceServers": [...]}: the TURN servers a user would
//	                  get at login, for a throwaway name; with access control
//	                  on, only for ?token=<a valid sign-in token> (its name)
//	POST /diag/echo   an SDP offer {"type":"offer","sdp":...} in, the answer
//	                  out: a PeerConnection on the SFU's own sockets that
//	                  echoes data-channel messages (sfu.Echo; 30 s, 32 at once)

const maxDiagBody = 64 << 10

func (a *App) diagRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /diag", func(w http.ResponseWriter, r *http.Request) {
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/diag.html"
		a.web.ServeHTTP(w, r2)
	})
	mux.HandleFunc("GET /diag/ice", a.diagICE)
	mux.HandleFunc("POST /diag/echo", a.diagEcho)
}

func (a *App) diagICE(w http.ResponseWriter, r *http.Request) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	user := "diag-" + hex.EncodeToString(b[:])
	if a.cfg.AuthSecret != "" {
		// TURN credentials only for people who may sign in: the page
		// passes on the sign-in link's token.
		name, err := signaling.TokenName([]byte(a.cfg.AuthSecret), r.URL.Query().Get("token"))
		if err != nil {
			w.Header().Set("Cache-Control", "no-store")
			writeJSON(w, http.StatusOK, map[string]any{"iceServers": []signaling.ICEServer{}, "auth": true, "message": err.Error()})
			return
		}
		user = name
	}
	servers := []signaling.ICEServer{}
	if s := a.iceServersFor(user, r.Host); s != nil {
		servers = s
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"iceServers": servers, "auth": a.cfg.AuthSecret != ""})
}

func (a *App) diagEcho(w http.ResponseWriter, r *http.Request) {
	var offer webrtc.SessionDescription
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxDiagBody)).Decode(&offer); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "body must be an SDP offer as JSON: " + err.Error()})
		return
	}
	answer, err := a.sfu.Echo(r.Context(), offer)
	switch {
	case errors.Is(err, sfu.ErrTooManyEchoes):
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error()})
	case err != nil:
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	default:
		writeJSON(w, http.StatusOK, answer)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
