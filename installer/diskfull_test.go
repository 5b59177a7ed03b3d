package installer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestDiskFull installs onto a small tmpfs: an upgrade that does not fit
// fails with ENOSPC naming the file, and leaves the previous generation
// current and intact, with no temp files behind.
func TestDiskFull(t *testing.T) {
	root := filepath.Join(t.TempDir(), "small")
	os.MkdirAll(root, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", root).CombinedOutput(); err != nil {
		// Needs root with CAP_SYS_ADMIN (these machines have it; a
		// container may not).
		t.Skipf("cannot mount a tmpfs here: %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", root).Run() })

	dir := t.TempDir()
	v1 := release{version: "1.0.0", files: map[string][]byte{"/opt/a": []byte("a v1"), "/opt/big": []byte("small v1")}}
	v2 := release{version: "2.0.0", files: map[string][]byte{"/opt/a": []byte("a v2"), "/opt/big": bytes.Repeat([]byte{7}, 6<<20)}}
	a1 := v1.build(t, filepath.Join(dir, "v1"))
	a2 := v2.build(t, filepath.Join(dir, "v2"))
	install(t, a1, root)
	before := snapshot(t, root)

	_, err := installArchive(a2, root)
	// Files (a few at a time) and registry content are written side by
	// side: whichever write finds the disk full is named. (The bundle is
	// on another filesystem, so its blobs are copied, not kept.)
	if !errors.Is(err, syscall.ENOSPC) || !(strings.Contains(err.Error(), "placing /opt/") || strings.Contains(err.Error(), "/var/lib/zdt/registry/")) {
		t.Fatalf("err = %v, want ENOSPC naming the file being written", err)
	}
	t.Logf("the user sees: %v", err)
	st, err := installerStatus(root)
	if err != nil || st.Generation.Version != "1.0.0" {
		t.Fatalf("status after the failed upgrade = %+v, %v", st.Generation, err)
	}
	readIs(t, root, "opt/big", "small v1")
	if left := tempFiles(t, root); len(left) > 0 {
		t.Fatalf("temp files left: %v", left)
	}
	// The files the failed run already replaced are complete v2 versions;
	// nothing else under the root changed except zdt's own state.
	after := snapshot(t, root)
	for p, f := range before {
		if strings.HasPrefix(p, StateDir) || p == "opt/a" {
			continue
		}
		if after[p].sum != f.sum {
			t.Errorf("%s changed by the failed upgrade", p)
		}
	}
	if a := after["opt/a"].sum; a != before["opt/a"].sum && a != sha("a v2") {
		t.Errorf("opt/a is neither v1 nor v2")
	}
}

func installerStatus(root string) (Status, error) { return GetStatus(context.Background(), root) }

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}
