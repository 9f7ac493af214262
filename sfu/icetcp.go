package sfu

import (
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/logging"
	"github.com/pion/webrtc/v4"
)

// iceTCPFirstBindTimeout closes an ICE-TCP connection whose first STUN
// binding request has not arrived by then (pion's default is 30 s).
const iceTCPFirstBindTimeout = 10 * time.Second

// newTCPMuxes starts one pion TCP mux (passive ICE-TCP) per listener.
func newTCPMuxes(cfg Config) []*ice.TCPMuxDefault {
	var out []*ice.TCPMuxDefault
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError // a failed first read per stray connection is no news
	for _, ln := range cfg.ICETCP {
		out = append(out, ice.NewTCPMuxDefault(ice.TCPMuxParams{
			Listener:             ln,
			Logger:               lf.NewLogger("ice-tcp"),
			ReadBufferSize:       64,
			WriteBufferSize:      4 << 20, // pion's recommendation: a slow reader loses packets, never blocks the SFU
			FirstStunBindTimeout: iceTCPFirstBindTimeout,
		}))
	}
	return out
}

// setICETCP adds TCP host candidates on the muxes' ports.
func setICETCP(se *webrtc.SettingEngine, tcp []*ice.TCPMuxDefault) {
	switch len(tcp) {
	case 0:
		return
	case 1:
		se.SetICETCPMux(tcp[0])
	default:
		muxes := make([]ice.TCPMux, len(tcp))
		for i, m := range tcp {
			muxes[i] = m
		}
		se.SetICETCPMux(ice.NewMultiTCPMuxDefault(muxes...))
	}
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeUDP6,
		webrtc.NetworkTypeTCP4, webrtc.NetworkTypeTCP6})
}

func closeTCPMuxes(tcp []*ice.TCPMuxDefault) {
	for _, m := range tcp {
		_ = m.Close()
	}
}
