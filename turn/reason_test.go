package turn

import (
	"bytes"
	"testing"

	"github.com/pion/stun/v3"
)

// TestWithReason: only a 486 Allocate error response without a reason
// phrase or integrity is rewritten; everything else passes as it is.
func TestWithReason(t *testing.T) {
	allocErr := stun.NewType(stun.MethodAllocate, stun.ClassErrorResponse)
	build := func(setters ...stun.Setter) []byte {
		m, err := stun.Build(append([]stun.Setter{stun.TransactionID}, setters...)...)
		if err != nil {
			t.Fatal(err)
		}
		return m.Raw
	}
	bare := build(allocErr, &stun.ErrorCodeAttribute{Code: stun.CodeAllocQuotaReached})
	out := withReason(bare)
	var m stun.Message
	if err := stun.Decode(out, &m); err != nil {
		t.Fatal(err)
	}
	var code stun.ErrorCodeAttribute
	if err := code.GetFrom(&m); err != nil || code.Code != 486 || string(code.Reason) != "Allocation Quota Reached" ||
		m.Type != allocErr || !bytes.Equal(out[8:20], bare[8:20]) {
		t.Fatalf("rewritten: %v %v %q %v", err, code.Code, code.Reason, m.Type)
	}
	for name, p := range map[string][]byte{
		"channel data": {0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4},
		"short":        {0x01, 0x13},
		"with reason":  build(allocErr, &stun.ErrorCodeAttribute{Code: 486, Reason: []byte("full")}),
		"other code":   build(allocErr, &stun.ErrorCodeAttribute{Code: stun.CodeUnauthorized}),
		"integrity":    build(allocErr, &stun.ErrorCodeAttribute{Code: 486}, stun.NewShortTermIntegrity("x")),
		"success":      build(stun.NewType(stun.MethodAllocate, stun.ClassSuccessResponse)),
	} {
		if got := withReason(p); !bytes.Equal(got, p) {
			t.Errorf("%s: rewritten", name)
		}
	}
}
