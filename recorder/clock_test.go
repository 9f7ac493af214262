package recorder

import (
	"testing"
	"time"
)

// A sender report that disagrees with the arrival-time anchor moves the
// mapping, but slewed: frames keep going forward at nearly their own
// pace, never bunched or backwards, and then follow the report exactly.
func TestSenderReportSlewsTheMapping(t *testing.T) {
	for _, shift := range []time.Duration{-60 * time.Millisecond, 80 * time.Millisecond} {
		c := newRTPClock(90000)
		var sc senderClock
		base := time.Date(2026, 11, 21, 12, 0, 0, 0, time.UTC)
		const frame = 3000 // 33.3 ms at 90 kHz
		frameNs := ticksToNs(frame, 90000)
		var last int64
		for k := 0; k < 90; k++ {
			ts := uint32(1000 + k*frame)
			arrival := base.Add(time.Duration(k) * time.Duration(frameNs)).UnixNano()
			if k == 10 {
				// The first report (from a sender clock an hour off)
				// comes shift later than frame 10's arrival, which
				// anchors frame 10 there from now on.
				c.senderReport(&sc, toNTP(time.Unix(0, arrival).Add(time.Hour)), ts, arrival+int64(shift))
			}
			w, _ := c.wall(ts, arrival)
			if k > 0 {
				if d := w - last; d < frameNs*89/100 || d > frameNs*111/100 {
					t.Fatalf("shift %v: frame %d comes %v after the previous one, want %v ± 10 %%",
						shift, k, time.Duration(d), time.Duration(frameNs))
				}
			}
			last = w
			want := arrival + int64(shift)
			if d := w - want; k >= 40 && (d > 1000 || d < -1000) {
				t.Fatalf("shift %v: frame %d at %v, want the report's %v", shift, k, time.Duration(w-arrival), shift)
			}
		}
	}
}
