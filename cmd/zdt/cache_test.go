package main

import "testing"

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1234": 1234, "10B": 10, "2KB": 2000, "2K": 2048, "2KiB": 2048,
		"1.5GiB": 3 << 29, "20gib": 20 << 30, "500MB": 500e6, "1T": 1 << 40, " 3 MiB ": 3 << 20,
	} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MB", "-1", "10XB", "1..2G", "9999999999TiB", "1e3"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}
