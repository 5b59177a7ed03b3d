package installer

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// dirAction is an after action in dir that creates "marker" in its
// working directory and writes its physical path (pwd -P) to out.
func dirAction(dir, out string) string {
	return fmt.Sprintf(`      after:
        - name: in-dir
          command: sh
          args: [-c, 'touch marker && pwd -P > "$OUT"']
          env: {OUT: %q}
          dir: %s
`, out, dir)
}

// TestActionDirSymlinkPlanted: an action's dir that is a symlink out of
// the root is refused; the action does not run, nothing is created
// outside.
func TestActionDirSymlinkPlanted(t *testing.T) {
	dir := t.TempDir()
	root, outside := filepath.Join(dir, "root"), filepath.Join(dir, "outside")
	out := filepath.Join(dir, "pwd.out")
	for _, d := range []string{filepath.Join(root, "opt"), outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(root, "opt/work")); err != nil {
		t.Fatal(err)
	}
	arch := buildActions(t, dir, "1", actComp{name: "node", files: map[string]string{"/etc/node.conf": "n"}, actions: dirAction("/opt/work", out)})
	_, err := installActs(t, arch, root, Options{})
	var ae *ActionError
	if !errors.As(err, &ae) || !strings.Contains(err.Error(), "working directory /opt/work") {
		t.Fatalf("install error = %v, want the action's working directory refused", err)
	}
	if _, err := os.Stat(filepath.Join(outside, "marker")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the action ran outside the root: %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the action ran: %v", err)
	}
}

// TestActionDirSwappedForSymlink: the action's dir is a real directory
// when it is checked and a symlink out of the root when the action
// starts (testHookActionDir swaps it in the window a hostile process
// would race for). The action still runs in the directory that was
// checked, never outside the root.
func TestActionDirSwappedForSymlink(t *testing.T) {
	dir := t.TempDir()
	root, outside := filepath.Join(dir, "root"), filepath.Join(dir, "outside")
	out := filepath.Join(dir, "pwd.out")
	work := filepath.Join(root, "opt/work")
	for _, d := range []string{work, outside} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	swapped := 0
	testHookActionDir = func(d string) {
		if d != work {
			t.Errorf("hook for %s, want %s", d, work)
			return
		}
		if err := os.Rename(work, work+".orig"); err != nil {
			t.Error(err)
		}
		if err := os.Symlink(outside, work); err != nil {
			t.Error(err)
		}
		swapped++
	}
	t.Cleanup(func() { testHookActionDir = nil })
	arch := buildActions(t, dir, "1", actComp{name: "node", files: map[string]string{"/etc/node.conf": "n"}, actions: dirAction("/opt/work", out)})
	if _, err := installActs(t, arch, root, Options{}); err != nil {
		t.Fatal(err)
	}
	if swapped != 1 {
		t.Fatalf("the directory was swapped %d times, want 1", swapped)
	}
	if _, err := os.Stat(filepath.Join(outside, "marker")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the action ran outside the root: %v", err)
	}
	if _, err := os.Stat(filepath.Join(work+".orig", "marker")); err != nil {
		t.Errorf("the action did not run in the checked directory: %v", err)
	}
	got, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(work + ".orig")
	if err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(string(got)) != real {
		t.Errorf("the action ran in %q, want %q", strings.TrimSpace(string(got)), real)
	}
}
