package build

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/testregistry"
)

var bombChart = testregistry.BombChart

// TestRenderBombInCreate: discovery of a chart that exceeds the render
// limits fails naming the chart when asked for explicitly, and is skipped
// with a warning otherwise; cancelling the create during rendering returns
// within 2 s.
func TestRenderBombInCreate(t *testing.T) {
	dir := t.TempDir()
	src := bombChart(t, dir, "{{ range until 100000 }}{{ range until 100000 }}xxxxxxxxxx{{ end }}{{ end }}", "")
	body := "components:\n  - name: apps\n    charts:\n      - name: bomb\n        source: " + src + "\n"

	start := time.Now()
	err := createErr(t, t.TempDir(), body, CreateOptions{DiscoverImages: true, DiscoveryRequired: true})
	if !errors.Is(err, bundle.ErrRenderLimit) || !strings.Contains(err.Error(), "chart bomb") {
		t.Fatalf("err = %v", err)
	}
	t.Logf("with the default limits: failed after %s: %v", time.Since(start).Round(time.Millisecond), err)

	var logs bytes.Buffer
	if err := createErr(t, t.TempDir(), body, CreateOptions{DiscoverImages: true, MaxRenderSize: 1 << 20, Logger: slog.New(slog.NewTextHandler(&logs, nil))}); err != nil {
		t.Fatalf("discovery not asked for explicitly: %v", err)
	}
	if !strings.Contains(logs.String(), "render limits") || !strings.Contains(logs.String(), "chart=bomb") {
		t.Fatalf("no warning: %s", logs.String())
	}

	// A loop that neither writes nor calls: only the goroutine's caller
	// can give up on it.
	spin := bombChart(t, t.TempDir(), "{{ range .Values.big }}{{ range $.Values.big }}{{ range $.Values.big }}{{ end }}{{ end }}{{ end }}", "big: ["+strings.Repeat("1,", 299)+"1]\n")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(500*time.Millisecond, cancel)
	spec := writeSpec(t, dir, "components:\n  - name: apps\n    charts:\n      - name: bomb\n        source: "+spin+"\n")
	start = time.Now()
	_, err = Create(ctx, spec, CreateOptions{Output: filepath.Join(dir, "x.zdt"), DiscoverImages: true})
	if took := time.Since(start); !errors.Is(err, context.Canceled) || took > 2500*time.Millisecond {
		t.Fatalf("cancelled 0.5 s in: returned after %s with %v", took, err)
	}
	assertNothingWritten(t, dir, filepath.Join(dir, "x.zdt"))
}
