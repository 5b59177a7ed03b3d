package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// actionsBundle writes the spec of bundle nodes VERSION (components
// kubelet and app, one file each, with the given contents; app's reload
// action exits appExit) and creates it signed with k.key in dir.
func actionsBundle(t *testing.T, dir, version, kubelet, app string, appExit int) string {
	t.Helper()
	sub := filepath.Join(dir, "spec-"+version)
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	file := func(name, content string) string {
		if err := os.WriteFile(filepath.Join(sub, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(content))
		return hex.EncodeToString(sum[:])
	}
	log := filepath.Join(dir, "actions.log")
	spec := fmt.Sprintf(`apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata: {name: nodes, version: %q}
components:
  - name: kubelet
    files:
      - {source: kubelet, sha256: %s, target: /usr/bin/kubelet, mode: "0755"}
    actions:
      after:
        - name: restart
          command: sh
          args: [-c, 'echo "restarting the kubelet of $ZDT_NODE_NAME"; echo "$ZDT_COMPONENT $ZDT_ACTION $ZDT_BUNDLE_VERSION" >> "$LOG"']
          env: {LOG: %q}
          timeout: 30s
  - name: app
    files:
      - {source: app.conf, sha256: %s, target: /etc/app.conf}
    actions:
      after:
        - name: reload
          command: sh
          args: [-c, 'echo "$ZDT_COMPONENT $ZDT_ACTION $ZDT_BUNDLE_VERSION" >> "$LOG"; echo "reload refused: bad config" >&2; exit %d']
          env: {LOG: %q}
`, version, file("kubelet", kubelet), log, file("app.conf", app), appExit, log)
	if err := os.WriteFile(filepath.Join(sub, "zdt.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "nodes-"+version+".zdt")
	runIn(t, sub, []string{"COSIGN_PASSWORD=test"}, zdtBin, "bundle", "create", "--key", filepath.Join(dir, "k.key"), "-f", "zdt.yaml", "-o", out).must(t, "create "+version)
	return out
}

// TestActionsCLI is issue 15's component actions through the built CLI:
// --plan lists the actions and runs none; the first install runs every
// component's, streaming their output to the log (-v) prefixed with the
// component and action; installing the same bundle again runs none; a
// bundle that changes one component's file runs that component's actions
// only; status shows what the generation ran; a failing action fails the
// install (exit 1) naming the component, the action, its exit status and
// its output, and records no generation.
func TestActionsCLI(t *testing.T) {
	dir := t.TempDir()
	runIn(t, dir, []string{"COSIGN_PASSWORD=test"}, zdtBin, "key", "generate", "--prefix", "k").must(t, "key generate")
	v1 := actionsBundle(t, dir, "1.0.0", "kubelet one", "app one", 0)
	v2 := actionsBundle(t, dir, "2.0.0", "kubelet two", "app one", 0)
	v3 := actionsBundle(t, dir, "3.0.0", "kubelet two", "app three", 4)
	root := filepath.Join(dir, "root")
	log := filepath.Join(dir, "actions.log")
	readLog := func() []string {
		t.Helper()
		b, err := os.ReadFile(log)
		if os.IsNotExist(err) {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(log)
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	install := func(bundle string, args ...string) result {
		return zdt(t, dir, append([]string{"install", "--bundle", bundle, "--key", "k.pub", "--root", root}, args...)...)
	}

	plan := install(v1, "--plan").must(t, "install --plan")
	for _, want := range []string{"! action  kubelet/after[0] restart", "! action  app/after[0] reload", "(component changed)"} {
		if !strings.Contains(plan.stdout, want) {
			t.Errorf("--plan does not list %q:\n%s", want, plan.stdout)
		}
	}
	if got := readLog(); got != nil {
		t.Fatalf("--plan ran actions: %q", got)
	}

	first := install(v1, "-v").must(t, "install v1")
	if got, want := readLog(), []string{"kubelet restart 1.0.0", "app reload 1.0.0"}; !slices.Equal(got, want) {
		t.Errorf("first install ran %q, want %q", got, want)
	}
	host, _ := os.Hostname()
	if want := "[kubelet/after[0] restart] restarting the kubelet of " + host; !strings.Contains(first.stderr, want) {
		t.Errorf("-v log lacks %q:\n%s", want, first.stderr)
	}
	if !strings.Contains(first.stdout, "installed: generation 1") || !strings.Contains(first.stdout, "actions: 2 ran") {
		t.Errorf("install said %q", first.stdout)
	}

	again := install(v1).must(t, "install v1 again")
	if got := readLog(); got != nil {
		t.Errorf("re-installing the same bundle ran %q", got)
	}
	if !strings.Contains(again.stdout, "nothing changed") || strings.Contains(again.stdout, "actions:") {
		t.Errorf("re-install said %q", again.stdout)
	}

	install(v2).must(t, "install v2")
	if got, want := readLog(), []string{"kubelet restart 2.0.0"}; !slices.Equal(got, want) {
		t.Errorf("v2 (kubelet changed) ran %q, want %q", got, want)
	}
	st := zdt(t, dir, "status", "--root", root, "--output", "json").must(t, "status")
	var s struct {
		Current struct {
			Generation int
			Actions    []struct{ Component, Phase, Name string }
		}
	}
	if err := json.Unmarshal([]byte(st.stdout), &s); err != nil {
		t.Fatal(err)
	}
	if a := s.Current.Actions; s.Current.Generation != 2 || len(a) != 1 || a[0].Component != "kubelet" || a[0].Phase != "after" || a[0].Name != "restart" {
		t.Errorf("status: generation %d actions %+v, want 2 and kubelet's restart", s.Current.Generation, a)
	}

	failed := install(v3)
	if failed.code != 1 {
		t.Fatalf("install v3 (app's reload exits 4): exit %d, want 1\n%s", failed.code, failed.stderr)
	}
	for _, want := range []string{`component app: after action "reload"`, "exit status 4", "reload refused: bad config"} {
		if !strings.Contains(failed.stderr, want) {
			t.Errorf("the error does not say %q:\n%s", want, failed.stderr)
		}
	}
	if got, want := readLog(), []string{"app reload 3.0.0"}; !slices.Equal(got, want) {
		t.Errorf("v3 ran %q, want %q", got, want)
	}
	// Generation 2 is still current; v3's file was placed before its
	// action failed, so status reports it drifted (exit 5) until a
	// re-run (or installing v2 again) converges.
	st = zdt(t, dir, "status", "--root", root, "--output", "json")
	var drift struct{ Drift []string }
	if err := json.Unmarshal([]byte(st.stdout), &s); err != nil || s.Current.Generation != 2 {
		t.Errorf("after the failed install: generation %d (%v), want 2 still", s.Current.Generation, err)
	}
	if err := json.Unmarshal([]byte(st.stdout), &drift); err != nil || st.code != 5 || !slices.Equal(drift.Drift, []string{"/etc/app.conf"}) {
		t.Errorf("after the failed install: status exit %d, drift %q (%v); want 5 and /etc/app.conf", st.code, drift.Drift, err)
	}
	// v2 again repairs app's file: app changed on disk, so its action
	// runs; the kubelet's did not.
	install(v2).must(t, "install v2 again")
	if got, want := readLog(), []string{"app reload 2.0.0"}; !slices.Equal(got, want) {
		t.Errorf("re-installing v2 over v3's placed file ran %q, want %q", got, want)
	}
	zdt(t, dir, "status", "--root", root).must(t, "status after v2 again")
}
