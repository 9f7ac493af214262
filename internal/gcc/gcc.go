// SPDX-FileCopyrightText: 2026 The Pion community <https://pion.ly>
// SPDX-License-Identifier: MIT

// Package gcc implements Google Congestion Control for bandwidth estimation
//
// It is pion/interceptor v0.1.49's pkg/gcc (Google Congestion
// Control, a delay- and loss-based send-side bandwidth estimator) with
// its internal/cc feedback adapter, copied under the MIT licence (see
// LICENSE) so that recording a packet sent allocates nothing: pion keeps
// a list element and a boxed acknowledgment per packet (feedback_adapter.go,
// feedbackHistory). Apart from that and the import paths nothing is changed;
// diff against the pion release to see.
package gcc

import "time"

func clampInt(b, minVal, maxVal int) int {
	return max(minVal, min(maxVal, b))
}

func clampDuration(d, minVal, maxVal time.Duration) time.Duration {
	return time.Duration(clampInt(int(d), int(minVal), int(maxVal)))
}
