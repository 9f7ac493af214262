package sfu

import "github.com/pion/srtp/v3"

// Stand-ins for branch srtpkeys (deleted when it is merged).

type sessionKeys struct {
	profile               srtp.ProtectionProfile
	remoteKey, remoteSalt []byte
	localKey, localSalt   []byte
}

func (p *Participant) sessionKeys() *sessionKeys { return nil }

func (p *Participant) twccFeedback() *twccFeedback { return nil }
