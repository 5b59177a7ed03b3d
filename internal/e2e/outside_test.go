package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeRootRefusesSymlinksOut: with the CA directory or the registry
// store under --root made a symlink to a directory outside the root,
// `zdt serve --root` refuses to start, names the symlink, and writes
// nothing there (no ca.key, no store layout).
func TestServeRootRefusesSymlinksOut(t *testing.T) {
	for _, c := range []struct{ rel, flag string }{
		{"var/lib/zdt/tls", ""},
		{"var/lib/zdt/registry", "--insecure-http"},
	} {
		t.Run(c.rel, func(t *testing.T) {
			root, out := t.TempDir(), t.TempDir()
			p := filepath.Join(root, c.rel)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.Symlink(out, p); err != nil {
				t.Fatal(err)
			}
			args := []string{"serve", "--root", root, "--addr", "127.0.0.1:0"}
			if c.flag != "" {
				args = append(args, c.flag)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			b, err := exec.CommandContext(ctx, zdtBin, args...).CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("zdt %v kept running (serving through a symlink out of the root)\n%s", args, b)
			}
			if err == nil || !strings.Contains(string(b), "out of the install root") || !strings.Contains(string(b), p) {
				t.Fatalf("zdt %v: %v\n%s\nwant a refusal naming %s", args, err, b, p)
			}
			if ents, _ := os.ReadDir(out); len(ents) != 0 {
				t.Fatalf("serve wrote %v outside the root", ents)
			}
		})
	}
}

// TestInstallThroughSymlinkedBundle: --bundle given as a symlink installs
// (the archive kept is the file the link names), not "was replaced"; with
// -v the registry store's own log lines are shown (its logger is passed).
func TestInstallThroughSymlinkedBundle(t *testing.T) {
	dir := quickstart(t)
	zdt(t, dir, "bundle", "create", "-o", "q.zdt").must(t, "create")
	if err := os.Symlink("q.zdt", filepath.Join(dir, "link.zdt")); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "root")
	os.MkdirAll(root, 0o755)
	r := zdt(t, dir, "install", "-v", "--bundle", "link.zdt", "--root", root, "--insecure-skip-signature").must(t, "install through a symlink")
	if !strings.Contains(r.stderr, "kept bundle archive in the registry store") {
		t.Errorf("install -v does not show the registry store's log:\n%s", r.stderr)
	}
	kept, _ := filepath.Glob(filepath.Join(root, "var/lib/zdt/registry/archives/*.zdt"))
	a, _ := os.Stat(filepath.Join(dir, "q.zdt"))
	if len(kept) != 1 {
		t.Fatalf("kept archives: %v", kept)
	}
	if k, _ := os.Lstat(kept[0]); !os.SameFile(a, k) {
		t.Fatalf("kept archive %s is not a hard link of the bundle file", kept[0])
	}
}
