package mediatest

import (
	"time"

	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
)

const mtu = 1200

// Play sends the sample once, in real time, as RTP on the two tracks
// (either may be nil), and returns when it is done or stop is closed.
// The tracks set SSRC and payload type.
func Play(s Sample, video, audio *webrtc.TrackLocalStaticRTP, stop <-chan struct{}) error {
	vp := rtp.NewPacketizer(mtu, 0, 0, &codecs.VP8Payloader{EnablePictureID: true}, rtp.NewRandomSequencer(), 90000)
	ap := rtp.NewPacketizer(mtu, 0, 0, &codecs.OpusPayloader{}, rtp.NewRandomSequencer(), 48000)
	start := time.Now()
	const frame, packet = time.Second / 30, 20 * time.Millisecond
	nv, na := 0, 0
	timer := time.NewTimer(0)
	defer timer.Stop()
	for nv < len(s.Video) || na < len(s.Audio) {
		select {
		case <-stop:
			return nil
		case <-timer.C:
		}
		now := time.Since(start)
		for ; nv < len(s.Video) && time.Duration(nv)*frame <= now; nv++ {
			if err := send(video, vp.Packetize(s.Video[nv], 3000)); err != nil {
				return err
			}
		}
		for ; na < len(s.Audio) && time.Duration(na)*packet <= now; na++ {
			if err := send(audio, ap.Packetize(s.Audio[na], 960)); err != nil {
				return err
			}
		}
		next := time.Duration(1<<62 - 1)
		if nv < len(s.Video) {
			next = time.Duration(nv) * frame
		}
		if na < len(s.Audio) {
			next = min(next, time.Duration(na)*packet)
		}
		timer.Reset(next - time.Since(start))
	}
	return nil
}

func send(tr *webrtc.TrackLocalStaticRTP, pkts []*rtp.Packet) error {
	if tr == nil {
		return nil
	}
	for _, p := range pkts {
		if err := tr.WriteRTP(p); err != nil {
			return err
		}
	}
	return nil
}
