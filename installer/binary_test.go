package installer

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/manifests"
)

// installWithBinary installs archive under root placing the zdt binary bin.
func installWithBinary(t *testing.T, archive, root, bin string) Result {
	t.Helper()
	a, err := bundle.Open(context.Background(), archive)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	res, err := Install(context.Background(), a, Options{Root: root, ToolVersion: "test", Binary: bin})
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func sha256Of(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// keptBinaries lists the binaries kept under layout.BinariesDir.
func keptBinaries(t *testing.T, root string) []string {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(root, layout.BinariesDir))
	var out []string
	for _, e := range ents {
		if len(e.Name()) == 64 {
			out = append(out, "sha256:"+e.Name())
		}
	}
	slices.Sort(out)
	return out
}

// TestInstallPlacesBinary is issue 13.8: the unit runs /usr/local/bin/zdt,
// which nothing installed. Install places the zdt binary it is given
// there (mode 0755, atomically), records its digest in the generation,
// changes nothing for the same binary, replaces it for another (a new
// generation, the previous version kept), puts the previous one back on
// rollback, repairs a damaged one, keeps only the versions a rollback
// needs, and uninstall removes it.
func TestInstallPlacesBinary(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	p := release{version: "1", files: map[string][]byte{"/opt/tool": []byte("tool v1\n")}}.build(t, dir)
	bins := map[string][]byte{}
	for _, n := range []string{"a", "b", "c"} {
		bins[n] = bytes.Repeat([]byte("zdt binary "+n+"\n"), 50000)
		if err := os.WriteFile(filepath.Join(dir, "zdt-"+n), bins[n], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := func(n string) string { return filepath.Join(dir, "zdt-"+n) }
	target := filepath.Join(root, layout.Binary)
	placed := func(n string) {
		t.Helper()
		got, err := os.ReadFile(target)
		fi, _ := os.Stat(target)
		if err != nil || !bytes.Equal(got, bins[n]) || fi.Mode().Perm() != 0o755 {
			t.Fatalf("%s holds %d bytes (%v), mode %v: not binary %s", BinaryTarget, len(got), err, fi.Mode(), n)
		}
	}
	current := func() *Generation {
		t.Helper()
		s, err := GetStatus(context.Background(), root)
		if err != nil || s.Generation == nil {
			t.Fatalf("status: %v %+v", err, s)
		}
		return s.Generation
	}

	res := installWithBinary(t, p, root, bin("a"))
	placed("a")
	if g := current(); g.Binary != sha256Of(bins["a"]) {
		t.Fatalf("generation records binary %q, want %s", g.Binary, sha256Of(bins["a"]))
	}
	if c := res.Plan.Changes[len(res.Plan.Changes)-1]; c.Kind != KindBinary || c.Action != ActionAdd || c.Target != BinaryTarget {
		t.Fatalf("plan line of the binary: %+v", c)
	}
	before := snapshot(t, root)
	if again := installWithBinary(t, p, root, bin("a")); again.Applied || again.Plan.HasChanges() {
		t.Fatalf("the same bundle and binary again: %+v", again)
	}
	if after := snapshot(t, root); !equalSnapshots(before, after) {
		t.Fatal("installing the same binary again changed files")
	}

	res = installWithBinary(t, p, root, bin("b"))
	placed("b")
	if !res.Applied || res.Generation != 2 || current().Binary != sha256Of(bins["b"]) {
		t.Fatalf("another binary: %+v, generation binary %s", res, current().Binary)
	}
	if got := keptBinaries(t, root); !slices.Equal(got, sortedStrings(sha256Of(bins["a"]), sha256Of(bins["b"]))) {
		t.Fatalf("kept binaries %v, want a's and b's", got)
	}

	if _, err := Rollback(context.Background(), Options{Root: root}); err != nil {
		t.Fatal(err)
	}
	placed("a")
	if g := current(); g.Binary != sha256Of(bins["a"]) {
		t.Fatalf("after rollback the generation records %s", g.Binary)
	}

	// A damaged binary is drift, and the next install repairs it.
	if err := os.WriteFile(target, []byte("not zdt"), 0o755); err != nil {
		t.Fatal(err)
	}
	s, err := GetStatus(context.Background(), root)
	if err != nil || !slices.Contains(s.Drift, BinaryTarget) || s.Healthy() {
		t.Fatalf("status after the binary was overwritten: %v %+v", err, s.Drift)
	}
	installWithBinary(t, p, root, bin("a"))
	placed("a")
	if s, _ := GetStatus(context.Background(), root); !s.Healthy() {
		t.Fatalf("status after the repair: %+v", s.Drift)
	}

	// Only what the current generation and its rollback need is kept.
	installWithBinary(t, p, root, bin("c"))
	placed("c")
	if got := keptBinaries(t, root); !slices.Equal(got, sortedStrings(sha256Of(bins["a"]), sha256Of(bins["c"]))) {
		t.Fatalf("kept binaries %v, want a's and c's", got)
	}

	if manifests.ReservedTarget(BinaryTarget) == "" {
		t.Errorf("a file item may take %s", BinaryTarget)
	}
	if _, err := Uninstall(context.Background(), Options{Root: root}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Fatalf("uninstall left %s: %v", BinaryTarget, err)
	}
}

func sortedStrings(s ...string) []string { slices.Sort(s); return s }

func equalSnapshots(a, b map[string]fileState) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// TestBinaryIsVerified: the binary is placed only with the bytes that were
// hashed. A source that changed after it was hashed is refused while it
// is copied (neither the target nor a kept version is written), and a kept
// version damaged since is refused while it is copied into place; the
// target is left alone.
func TestBinaryIsVerified(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	src := filepath.Join(dir, "zdt-src")
	os.WriteFile(src, []byte("the zdt that was hashed"), 0o755)
	bin, err := hashBinary(ctx, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, layout.Binary)
	os.WriteFile(src, []byte("the zdt that was swappd"), 0o755) // same size, other bytes
	var mm *fsutil.MismatchError
	if err := installBinary(ctx, r, bin); !errors.As(err, &mm) {
		t.Fatalf("placing a binary changed since it was hashed: %v", err)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) || len(keptBinaries(t, dir)) != 0 {
		t.Fatalf("a binary changed since it was hashed was placed (%v) or kept (%v)", err, keptBinaries(t, dir))
	}

	os.WriteFile(src, []byte("the zdt that was hashed"), 0o755)
	if err := installBinary(ctx, r, bin); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(target); string(got) != "the zdt that was hashed" {
		t.Fatalf("placed %q", got)
	}
	os.Remove(target)
	kept := filepath.Join(dir, layout.StoredBinary(bin.digest.Encoded()))
	os.Chmod(kept, 0o644)
	os.WriteFile(kept, []byte("the zdt that was hacked"), 0o644)
	if err := placeBinary(ctx, r, bin.digest.String(), nil); !errors.As(err, &mm) {
		t.Fatalf("placing a damaged kept binary: %v", err)
	}
	if _, err := os.Lstat(target); !os.IsNotExist(err) {
		t.Fatalf("a damaged binary was placed: %v", err)
	}
	if err := placeBinary(ctx, r, digest.FromString("never kept").String(), nil); err == nil {
		t.Fatal("placing a version that was never kept succeeded")
	}
}

// TestBinaryHashIsReused: a re-install does not hash the ~100 MB binary
// again when it is, by path, inode, size and modification time, the file
// the last install hashed; any change to it is hashed.
func TestBinaryHashIsReused(t *testing.T) {
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "zdt")
	os.WriteFile(src, []byte("zdt v1"), 0o755)
	first, err := hashBinary(ctx, src, nil)
	if err != nil {
		t.Fatal(err)
	}
	marker := digest.FromString("recorded").String() // not the file's digest: proves it was not hashed
	last := &binarySourceRecord{Path: src, Digest: marker, Stat: first.stat}
	if again, err := hashBinary(ctx, src, last); err != nil || again.digest.String() != marker {
		t.Fatalf("the same file was hashed again: %v %v", again, err)
	}
	os.WriteFile(src, []byte("zdt v2"), 0o755) // same size, new mtime
	if changed, err := hashBinary(ctx, src, last); err != nil || changed.digest != digest.FromString("zdt v2") {
		t.Fatalf("a changed file was not hashed: %v %v", changed, err)
	}
}

// TestBinaryKeptOnceAndLinked: the binary is written once (the kept copy,
// fsynced) and BinaryTarget is a hard link to it, so the plan's first
// placement hashes it while copying it (the plan line and the generation
// still name its digest). The link's consequence is covered: an edit of
// BinaryTarget in place is an edit of the kept copy too, so status reports
// drift, and the repair finds the kept copy damaged (it is hashed before it
// is used) and writes it again from the running zdt; a rollback to a kept
// version still refuses one damaged in place. A version kept read-only by
// an earlier zdt is made 0755 before it is linked.
func TestBinaryKeptOnceAndLinked(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	p := release{version: "1", files: map[string][]byte{"/opt/tool": []byte("tool v1\n")}}.build(t, dir)
	bins := map[string][]byte{}
	for _, n := range []string{"a", "b"} {
		bins[n] = bytes.Repeat([]byte("zdt binary "+n+"\n"), 50000)
		if err := os.WriteFile(filepath.Join(dir, "zdt-"+n), bins[n], 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bin := func(n string) string { return filepath.Join(dir, "zdt-"+n) }
	target := filepath.Join(root, layout.Binary)
	kept := func(n string) string {
		return filepath.Join(root, layout.StoredBinary(sha256Of(bins[n])[len("sha256:"):]))
	}
	linked := func(n, what string) {
		t.Helper()
		got, err := os.ReadFile(target)
		tfi, _ := os.Stat(target)
		kfi, kerr := os.Stat(kept(n))
		if err != nil || kerr != nil || !bytes.Equal(got, bins[n]) || tfi.Mode().Perm() != 0o755 {
			t.Fatalf("%s: %s holds %d bytes (%v, kept: %v): not binary %s", what, BinaryTarget, len(got), err, kerr, n)
		}
		if !os.SameFile(tfi, kfi) {
			t.Fatalf("%s: %s is not a link of the kept copy (written twice)", what, BinaryTarget)
		}
	}

	res := installWithBinary(t, p, root, bin("a"))
	linked("a", "first install")
	c := res.Plan.Changes[len(res.Plan.Changes)-1]
	if c.Kind != KindBinary || c.Action != ActionAdd || c.To != sha256Of(bins["a"]) || c.Size != int64(len(bins["a"])) {
		t.Fatalf("plan line of a binary hashed while copied: %+v", c)
	}
	s, err := GetStatus(context.Background(), root)
	if err != nil || s.Generation.Binary != sha256Of(bins["a"]) || !s.Healthy() {
		t.Fatalf("status after the first install: %v %+v", err, s)
	}
	// The next install of the same binary reuses the recorded hash: nothing.
	if again := installWithBinary(t, p, root, bin("a")); again.Applied || again.Plan.HasChanges() {
		t.Fatalf("the same binary again: %+v", again.Plan.Changes)
	}

	// An edit in place (same inode) damages the kept copy as well.
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write([]byte("edited in place"))
	f.Close()
	if b, _ := os.ReadFile(kept("a")); string(b) != "edited in place" {
		t.Fatalf("the test's premise: the kept copy is not the target's inode (%q)", b)
	}
	if s, err := GetStatus(context.Background(), root); err != nil || !slices.Contains(s.Drift, BinaryTarget) {
		t.Fatalf("status after an edit in place: %v %+v", err, s)
	}
	res = installWithBinary(t, p, root, bin("a"))
	if c := res.Plan.Changes[len(res.Plan.Changes)-1]; c.Action != ActionRepair || !res.Applied {
		t.Fatalf("install after an edit in place: %+v", c)
	}
	linked("a", "after the repair")
	if s, _ := GetStatus(context.Background(), root); !s.Healthy() {
		t.Fatalf("status after the repair: %+v", s.Drift)
	}

	// Upgrade, then damage a's kept copy (no longer linked): rollback
	// refuses it and leaves b in place.
	installWithBinary(t, p, root, bin("b"))
	linked("b", "after the upgrade")
	if b, _ := os.ReadFile(kept("a")); !bytes.Equal(b, bins["a"]) {
		t.Fatal("the upgrade changed the kept previous version")
	}
	saved, _ := os.ReadFile(kept("a"))
	os.WriteFile(kept("a"), bytes.Repeat([]byte("X"), len(saved)), 0o755)
	var mm *fsutil.MismatchError
	if _, err := Rollback(context.Background(), Options{Root: root}); !errors.As(err, &mm) {
		t.Fatalf("rollback to a damaged kept version: %v", err)
	}
	linked("b", "after the refused rollback")

	// A version kept read-only (an earlier zdt) is made 0755 and linked.
	os.WriteFile(kept("a"), saved, 0o555)
	os.Chmod(kept("a"), 0o555)
	if _, err := Rollback(context.Background(), Options{Root: root}); err != nil {
		t.Fatal(err)
	}
	linked("a", "after the rollback")
}
