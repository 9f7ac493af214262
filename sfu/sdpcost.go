package sfu

import (
	"fmt"
	"strings"
)

// maxCodecWork bounds what parsing a remote description's codecs costs.
// pion looks up the codec of each payload type of an m= line by rebuilding
// the codec map from every attribute of its media section
// (webrtc.codecsFromMediaDescription calls sdp.GetCodecForPayloadType per
// format), so a section costs payload types × lines. The fuzz target
// found it: a 60 KB offer (within the signaling's 64 KiB and 16 m= lines)
// of 2,000 payload types and 2,900 rtcp-fb lines took 3.3 s of CPU to
// parse, one offer per message. Chromium's audio+video offer costs
// 8×31 + 23×129 ≈ 3,200; the bound leaves room for 20 times that.
const maxCodecWork = 64 << 10

// checkCodecWork refuses a description whose codec parsing would cost
// more than maxCodecWork, before pion parses it. Lines end at '\n', as
// pion's SDP lexer reads them.
func checkCodecWork(typ, sdp string) error {
	work, formats, lines := 0, 0, 0
	for line := range strings.SplitSeq(sdp, "\n") {
		line = strings.TrimLeft(line, "\r")
		if strings.HasPrefix(line, "m=") {
			work += formats * lines
			formats, lines = max(len(strings.Fields(line))-3, 0), 0
		}
		lines++
	}
	work += formats * lines
	if work > maxCodecWork {
		return fmt.Errorf("bad %s: its media sections list too many payload types for their length "+
			"(payload types × lines summed over m= sections is %d, at most %d are accepted)", typ, work, maxCodecWork)
	}
	return nil
}
