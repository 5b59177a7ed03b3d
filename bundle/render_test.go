package bundle

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart/loader"
)

// bombChart writes a local chart whose one template is tpl.
func bombChart(t testing.TB, dir, tpl, values string) string {
	return chartDir(t, filepath.Join(dir, "bomb"), map[string]string{
		"Chart.yaml":            "apiVersion: v2\nname: bomb\nversion: 1.0.0\n",
		"values.yaml":           values,
		"templates/bomb.yaml":   tpl,
		"templates/_x.tpl":      `{{- define "self" -}}{{ include "self" . }}{{ include "self" . }}{{- end -}}`,
		"templates/plain.yaml":  "image: nginx:1\n",
		"templates/NOTES.txt":   "{{ range until 100000 }}{{ range until 100000 }}x{{ end }}{{ end }}",
		"templates/other.json":  "{}",
		"templates/_helpers.tt": "",
	})
}

// TestRenderBounds: templates that would produce gigabytes, recurse
// without end or loop for hours fail promptly with ErrRenderLimit, within
// a bounded heap.
func TestRenderBounds(t *testing.T) {
	big := "big: [" + strings.Repeat("1,", 299) + "1]\n" // 2.7e7 empty iterations: seconds, not the hours of a real attack
	cases := []struct {
		name, tpl, values string
		timeout           time.Duration
	}{
		{name: "nested range writes", tpl: "{{ range until 100000 }}{{ range until 100000 }}xxxxxxxxxx{{ end }}{{ end }}"},
		{name: "doubling a variable", tpl: `{{ $x := "ab" }}{{ range until 64 }}{{ $x = cat $x $x }}{{ end }}{{ $x }}`},
		{name: "huge repeat", tpl: `{{ repeat 100000000000 "x" }}`},
		{name: "huge indent", tpl: `{{ indent 100000000000 "x" }}`},
		{name: "huge until", tpl: `{{ range until 1000000000000 }}{{ end }}`},
		{name: "huge seq", tpl: `{{ seq 1 100000000000 }}`},
		{name: "include recursion", tpl: `{{ include "self" . }}`},
		{name: "tpl recursion", tpl: `{{ tpl "{{ tpl . . }}" "{{ tpl . . }}" }}`},
		{name: "loop without writes", tpl: "{{ range until 100000 }}{{ range until 100000 }}{{ end }}{{ end }}", timeout: 300 * time.Millisecond},
		{name: "loop without calls", tpl: "{{ range .Values.big }}{{ range $.Values.big }}{{ range $.Values.big }}{{ end }}{{ end }}{{ end }}", values: big, timeout: 300 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ch, err := loader.Load(bombChart(t, t.TempDir(), tc.tpl, tc.values))
			if err != nil {
				t.Fatal(err)
			}
			timeout := tc.timeout
			if timeout == 0 {
				timeout = 20 * time.Second
			}
			ctx, cancel := context.WithTimeoutCause(context.Background(), timeout, ErrRenderLimit)
			defer cancel()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err = renderChart(ctx, ch, map[string]any{}, "r", "ns", 16<<20)
			took := time.Since(start)
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("rendered")
			}
			if !errors.Is(err, ErrRenderLimit) || len(err.Error()) > 1000 {
				t.Fatalf("err = %v, want ErrRenderLimit", err)
			}
			if took > 5*time.Second {
				t.Fatalf("took %s", took)
			}
			if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 128<<20 {
				t.Fatalf("heap grew by %d MiB", grew>>20)
			}
			t.Logf("%s: %v", took.Round(time.Millisecond), err)
		})
	}
}

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
	if !errors.Is(err, ErrRenderLimit) || !strings.Contains(err.Error(), "chart bomb") {
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
