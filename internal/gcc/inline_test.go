package gcc

import (
	"testing"
	"time"

	"github.com/pion/rtcp"
)

// The receive rate over the window, fed in feedback-sized batches: a
// steady 1,000 bytes every 10 ms is 800 kbit/s, and the window's slice
// stops growing (compacted in place) once it holds the window.
func TestRateCalculatorInline(t *testing.T) {
	var got []int
	st := rateState{calc: newRateCalculator(500 * time.Millisecond), onRate: func(r int) { got = append(got, r) }}
	start := time.Unix(1000, 0)
	var capAt2s int
	for i := range 400 {
		acks := make([]Acknowledgment, 10)
		for j := range acks {
			n := i*10 + j
			acks[j] = Acknowledgment{SequenceNumber: uint16(n), Size: 1000, Arrival: start.Add(time.Duration(n) * 10 * time.Millisecond)} //nolint:gosec // small
		}
		acks[3].Arrival = time.Time{} // not received: ignored
		st.calc.onAcks(&st, acks)
		if i == 20 {
			capAt2s = cap(st.history)
		}
	}
	if last := got[len(got)-1]; last < 700_000 || last > 900_000 {
		t.Errorf("rate %d bit/s, want ~720-800 kbit/s", last)
	}
	if cap(st.history) != capAt2s {
		t.Errorf("window slice grew from %d to %d at a steady rate", capAt2s, cap(st.history))
	}
}

// Acknowledgments sent in bursts more than 5 ms apart form one group per
// burst; each completed group goes to onGroup, in order.
func TestArrivalGroupsInline(t *testing.T) {
	var groups []arrivalGroup
	st := arrivalGroupState{onGroup: func(g arrivalGroup) { groups = append(groups, g) }}
	a := newArrivalGroupAccumulator()
	start := time.Unix(1000, 0)
	var acks []Acknowledgment
	for burst := range 5 {
		for k := range 3 {
			at := start.Add(time.Duration(burst)*20*time.Millisecond + time.Duration(k)*time.Millisecond)
			acks = append(acks, Acknowledgment{Size: 1000, Departure: at, Arrival: at.Add(30 * time.Millisecond)})
		}
	}
	a.onAcks(&st, acks[:7]) // split inside a burst: state carries over
	a.onAcks(&st, acks[7:])
	if len(groups) != 4 {
		t.Fatalf("%d groups, want 4 completed (the fifth still open)", len(groups))
	}
	for i, g := range groups {
		if g.packets != 3 {
			t.Errorf("group %d has %d packets, want 3", i, g.packets)
		}
	}
}

// Feedback mixing run-length and status-vector chunks unpacks into one
// slice in order, each chunk continuing the sequence numbers and the
// arrival clock where the previous one stopped.
func TestFeedbackChunksInOrder(t *testing.T) {
	f := NewFeedbackAdapter()
	start := time.Unix(1000, 0)
	sendTWCC(t, f, start, 100, 130)
	recv, lost := uint16(rtcp.TypeTCCPacketReceivedSmallDelta), uint16(rtcp.TypeTCCPacketNotReceived)
	vector := []uint16{recv, lost, recv, recv, lost, lost, recv}
	fb := &rtcp.TransportLayerCC{
		BaseSequenceNumber: 100, PacketStatusCount: 30, ReferenceTime: 1,
		PacketChunks: []rtcp.PacketStatusChunk{
			&rtcp.RunLengthChunk{PacketStatusSymbol: recv, RunLength: 10},
			&rtcp.StatusVectorChunk{SymbolSize: rtcp.TypeTCCSymbolSizeTwoBit, SymbolList: vector},
			&rtcp.RunLengthChunk{PacketStatusSymbol: lost, RunLength: 13},
		},
	}
	received := 10 + 4
	for range received {
		fb.RecvDeltas = append(fb.RecvDeltas, &rtcp.RecvDelta{Type: rtcp.TypeTCCPacketReceivedSmallDelta, Delta: 2000})
	}
	acks, err := f.OnTransportCCFeedback(time.Now(), fb)
	if err != nil {
		t.Fatal(err)
	}
	if len(acks) != 30 {
		t.Fatalf("%d acks, want 30", len(acks))
	}
	ref := time.Time{}.Add(64 * time.Millisecond)
	arrived := 0
	for i, a := range acks {
		if a.SequenceNumber != uint16(100+i) { //nolint:gosec // small
			t.Fatalf("ack %d: sequence number %d", i, a.SequenceNumber)
		}
		wantArrived := i < 10 || (i >= 10 && i < 17 && vector[i-10] == recv)
		if a.Arrival.IsZero() == wantArrived {
			t.Fatalf("ack %d: arrival %v, want received %v", i, a.Arrival, wantArrived)
		}
		if wantArrived {
			arrived++
			if want := ref.Add(time.Duration(arrived) * 2 * time.Millisecond); !a.Arrival.Equal(want) {
				t.Errorf("ack %d: arrival %v, want %v", i, a.Arrival, want)
			}
		}
	}
}
