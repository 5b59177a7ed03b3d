package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstallRepairsWhatStatusReports is issue 13.5: after the bundle file
// (and so the kept archive, its hard link) was overwritten in place, `zdt
// status` said "re-run zdt install to repair" but exited 0, and re-running
// install (also with --copy-blobs) said "already installed, nothing
// changed" and left the registry broken. Now status exits 5 and install
// of the intact bundle imports it again; a drifted file also makes status
// exit 5.
func TestInstallRepairsWhatStatusReports(t *testing.T) {
	dir := quickstart(t)
	zdt(t, dir, "bundle", "create", "-o", "q.zdt").must(t, "create")
	good, err := os.ReadFile(filepath.Join(dir, "q.zdt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "intact.zdt"), good, 0o644); err != nil { // another inode
		t.Fatal(err)
	}
	for _, c := range []struct{ name, flag string }{{"kept again", ""}, {"copy-blobs", "--copy-blobs"}} {
		t.Run(c.name, func(t *testing.T) {
			root := t.TempDir()
			zdt(t, dir, "install", "--bundle", "q.zdt", "--root", root, "--insecure-skip-signature").must(t, "install")
			kept, _ := filepath.Glob(filepath.Join(root, "var/lib/zdt/registry/archives/*.zdt"))
			if len(kept) != 1 {
				t.Fatalf("the bundle was not kept by a hard link: %v", kept)
			}
			zdt(t, dir, "status", "--root", root).must(t, "status of a healthy install")

			// Overwritten in place (same inode): the kept archive with it.
			f, err := os.OpenFile(filepath.Join(dir, "q.zdt"), os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(good[:len(good)/2])
			f.Close()
			t.Cleanup(func() { os.Remove(filepath.Join(dir, "q.zdt")); os.WriteFile(filepath.Join(dir, "q.zdt"), good, 0o644) })

			st := zdt(t, dir, "status", "--root", root)
			if st.code != 5 || !strings.Contains(st.stdout, "problem(s)") || !strings.Contains(st.stderr, "registry storage has") {
				t.Fatalf("status of a broken registry: exit %d, want 5\nstdout:\n%s\nstderr:\n%s", st.code, st.stdout, st.stderr)
			}
			args := []string{"install", "--bundle", "intact.zdt", "--root", root, "--insecure-skip-signature"}
			if c.flag != "" {
				args = append(args, c.flag)
			}
			r := zdt(t, dir, args...).must(t, "re-install")
			if strings.Contains(r.stdout, "nothing changed") || !strings.Contains(r.stdout, "repaired") {
				t.Fatalf("re-install did not repair:\n%s", r.stdout)
			}
			st = zdt(t, dir, "status", "--root", root).must(t, "status after the repair")
			if !strings.Contains(st.stdout, "registry   healthy") {
				t.Fatalf("status after the repair:\n%s", st.stdout)
			}
			if r := zdt(t, dir, args...).must(t, "install again"); !strings.Contains(r.stdout, "nothing changed") {
				t.Fatalf("install after the repair changed something:\n%s", r.stdout)
			}

			// A drifted file: exit 5 too, and install repairs it.
			if err := os.WriteFile(filepath.Join(root, "usr/local/bin/zdt-hello"), []byte("#!/bin/sh\necho changed\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			if st := zdt(t, dir, "status", "--root", root, "--output", "json"); st.code != 5 || !strings.Contains(st.stdout, "/usr/local/bin/zdt-hello") {
				t.Fatalf("status of a drifted file: exit %d, want 5\n%s\n%s", st.code, st.stdout, st.stderr)
			}
			zdt(t, dir, args...).must(t, "install repairing the file")
			zdt(t, dir, "status", "--root", root).must(t, "status after the file repair")
		})
	}
}
