package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSignalDuringChartRendering: a chart whose template loops for hours
// without writing or calling anything (nothing text/template could be
// interrupted at) is being rendered for image discovery; SIGTERM makes
// `zdt bundle create` exit (143) within 2 s, writing nothing.
func TestSignalDuringChartRendering(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"chart/Chart.yaml":          "apiVersion: v2\nname: spin\nversion: 1.0.0\n",
		"chart/values.yaml":         "big: [" + strings.Repeat("1,", 1999) + "1]\n",
		"chart/templates/spin.yaml": "{{ range .Values.big }}{{ range $.Values.big }}{{ range $.Values.big }}{{ end }}{{ end }}{{ end }}",
		"zdt.yaml": "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata:\n  name: spin\n  version: 1.0.0\n" +
			"components:\n  - name: apps\n    charts:\n      - name: spin\n        source: chart\n",
	}
	for p, c := range files {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(zdtBin, "bundle", "create", "--no-cache", "--discover-images", "--render-timeout", "1h", "-o", "out.zdt")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // well into rendering
	sent := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if took := time.Since(sent); took > 2*time.Second {
			t.Fatalf("exited %s after SIGTERM", took)
		}
		if cmd.ProcessState.ExitCode() != 143 {
			t.Fatalf("exit %d (%v), want 143", cmd.ProcessState.ExitCode(), err)
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatal("still running 5 s after SIGTERM")
	}
	if _, err := os.Stat(filepath.Join(dir, "out.zdt")); err == nil {
		t.Fatal("an archive was written")
	}
}
