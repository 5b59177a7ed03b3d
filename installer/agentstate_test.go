package installer

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/layout"
)

// TestRecordedAgentChecked: the agent options recorded in generated.json
// and in a generation are state on disk, written to the agent's unit by
// a later install or rollback. A corrupted record (a trust with neither
// policy nor --insecure-skip-signature, a node name with a line break)
// is refused with an error naming the state file, never a panic, and
// the unit is left as it was.
func TestRecordedAgentChecked(t *testing.T) {
	dir := t.TempDir()
	v1 := v1Release.build(t, dir)
	v2 := release{version: "2.0.0", images: v1Release.images, files: map[string][]byte{"/usr/local/bin/keep": []byte("keep v1")}}.build(t, dir)
	// corrupt rewrites the "agent" object of the JSON state file rel.
	corrupt := func(t *testing.T, root, rel string, edit func(agent map[string]any)) {
		t.Helper()
		p := filepath.Join(root, rel)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		agent, ok := doc["agent"].(map[string]any)
		if !ok {
			t.Fatalf("%s records no agent: %s", rel, b)
		}
		edit(agent)
		if b, err = json.Marshal(doc); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	noTrust := func(agent map[string]any) { agent["trust"] = map[string]any{} }
	badNode := func(agent map[string]any) { agent["node"] = "node-1\nExecStartPre=/bin/sh -c evil" }
	unitOf := func(t *testing.T, root string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(root, layout.SystemdUnit(AgentUnitName)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	tryInstall := func(t *testing.T, archive, root string) error {
		t.Helper()
		a, err := bundle.Open(context.Background(), archive)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		_, err = Install(context.Background(), a, Options{Root: root, ToolVersion: "test", Registry: openStore(t, root, false)})
		return err
	}
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
	}{{"trust {}", noTrust}, {"node with a line break", badNode}} {
		t.Run("generated.json "+tc.name, func(t *testing.T) {
			root := t.TempDir()
			installAgent(t, v1, root, Options{Agent: testAgent()})
			unit := unitOf(t, root)
			corrupt(t, root, layout.GeneratedRecord, tc.edit)
			err := tryInstall(t, v2, root) // without --agent: the recorded options
			if err == nil || !strings.Contains(err.Error(), layout.GeneratedRecord) || !errors.Is(err, ErrAgentConfig) {
				t.Fatalf("install over a corrupted agent record: %v, want an error naming %s", err, layout.GeneratedRecord)
			}
			if got := unitOf(t, root); got != unit {
				t.Fatalf("the unit changed:\n%s", got)
			}
		})
		t.Run("generation "+tc.name, func(t *testing.T) {
			root := t.TempDir()
			installAgent(t, v1, root, Options{Agent: testAgent()})
			installAgent(t, v2, root, Options{})
			unit := unitOf(t, root)
			corrupt(t, root, layout.Generation(1), tc.edit)
			_, err := Rollback(context.Background(), Options{Root: root, ToolVersion: "test", Registry: openStore(t, root, false)})
			if err == nil || !strings.Contains(err.Error(), layout.Generation(1)) || !errors.Is(err, ErrAgentConfig) {
				t.Fatalf("rollback to a generation with corrupted agent options: %v, want an error naming %s", err, layout.Generation(1))
			}
			if got := unitOf(t, root); got != unit {
				t.Fatalf("the unit changed:\n%s", got)
			}
			if st, err := GetStatus(context.Background(), root); err != nil || st.Generation == nil || st.Generation.Version != "2.0.0" {
				t.Fatalf("status after the refused rollback: %+v, %v", st, err)
			}
		})
	}
}
