package charts

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"testing"
	"time"

	"helm.sh/helm/v4/pkg/chart/v2/loader"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/testregistry"
)

var bombChart = testregistry.BombChart

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
			ctx, cancel := context.WithTimeoutCause(context.Background(), timeout, bundle.ErrRenderLimit)
			defer cancel()
			var before runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err = Render(ctx, ch, map[string]any{}, "r", "ns", 16<<20)
			took := time.Since(start)
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("rendered")
			}
			if !errors.Is(err, bundle.ErrRenderLimit) || len(err.Error()) > 1000 {
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
