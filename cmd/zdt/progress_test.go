package main

import (
	"io"
	"testing"
	"time"
)

// TestProgressRate: a byte bar shows no rate over the first moments of a
// phase (8 GiB reported a microsecond in is not "24 TB/s"), and the real
// rate once the phase has run for a while (#13).
func TestProgressRate(t *testing.T) {
	for _, tc := range []struct {
		done, total int64
		elapsed     time.Duration
		want        string
	}{
		{8 << 30, 16 << 30, time.Microsecond, "fetching 8.0 GiB / 16.0 GiB"},
		{8 << 30, 16 << 30, 999 * time.Millisecond, "fetching 8.0 GiB / 16.0 GiB"},
		{8 << 30, 16 << 30, 2 * time.Second, "fetching 8.0 GiB / 16.0 GiB (4.0 GiB/s)"},
		{0, 1 << 20, 5 * time.Second, "fetching 0 B / 1.0 MiB"},
		{-5, 1 << 20, 5 * time.Second, "fetching 0 B / 1.0 MiB"},
	} {
		if got := describe("fetching", tc.done, tc.total, tc.elapsed); got != tc.want {
			t.Errorf("describe(%d, %d, %s) = %q, want %q", tc.done, tc.total, tc.elapsed, got, tc.want)
		}
	}

	// The bar's description is describe's, from the phase's first update.
	p := &progress{phase: "writing archive", bar: newBytesBar(io.Discard, "writing archive"), bytes: true}
	p.update(8<<30, 16<<30)
	if p.start.IsZero() || time.Since(p.start) > time.Second {
		t.Fatalf("the phase's start is %v", p.start)
	}
}
