package main

import (
	"os"
	"path/filepath"
	"testing"

	"zdt.dev/zdt/manifests"
)

// TestDeployBundle: the deploy rows' spec is a valid zdt.yaml of
// deployCharts charts in three components, each chart directory present.
func TestDeployBundle(t *testing.T) {
	spec, charts, err := writeDeployBundle(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s, err := manifests.Load(spec)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for i, c := range s.Components {
		if c.Name != deployComponents[i] || len(c.Charts) == 0 {
			t.Fatalf("component %d = %s with %d charts", i, c.Name, len(c.Charts))
		}
		n += len(c.Charts)
	}
	if len(s.Components) != 3 || n != deployCharts || len(charts) != deployCharts {
		t.Fatalf("%d components, %d charts (%d listed), want 3 and %d", len(s.Components), n, len(charts), deployCharts)
	}
	if _, err := os.Stat(filepath.Join(charts[0].dir, "templates", "secret.yaml")); err != nil {
		t.Fatal(err)
	}
}
