package installer

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/manifests"
)

// editRoot rewrites the bundle root's item annotations (and their copies
// in index.json) by text replacement, as a hand-crafted bundle would.
func editRoot(t *testing.T, es []fixtures.TarEntry, pairs ...string) []fixtures.TarEntry {
	t.Helper()
	r := strings.NewReplacer(pairs...)
	var root string
	for _, e := range es {
		if e.Hdr.Name == "index.json" {
			var idx struct {
				Manifests []struct {
					Digest      string
					Annotations map[string]string
				}
			}
			if err := json.Unmarshal(e.Data, &idx); err != nil {
				t.Fatal(err)
			}
			for _, m := range idx.Manifests {
				if m.Annotations[manifests.AnnotationBundleRoot] != "" {
					root = m.Digest
				}
			}
		}
	}
	out, _, err := fixtures.EditBlob(es, digest.Digest(root), func(b []byte) []byte { return []byte(r.Replace(string(b))) })
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range out {
		if e.Hdr.Name == "index.json" {
			out[i].Data = []byte(r.Replace(string(e.Data)))
		}
	}
	return out
}

// writeBundle writes entries as an archive and returns its path.
func writeBundle(t *testing.T, es []fixtures.TarEntry) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "crafted.zdt")
	if err := fixtures.WriteTar(p, es); err != nil {
		t.Fatal(err)
	}
	return p
}

// rootIsEmpty fails when install wrote anything under root (opening the
// registry store, before install, creates its empty directory).
func rootIsEmpty(t *testing.T, root string) {
	t.Helper()
	var found []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		rel := strings.TrimPrefix(p, root+"/")
		if err == nil && p != root && !(fi.IsDir() && strings.HasPrefix(StateDir+"/registry", rel)) {
			found = append(found, rel)
		}
		return nil
	})
	if len(found) > 0 {
		t.Fatalf("install wrote %v", found)
	}
}

// TestInstallRefusesBadItems crafts bundles whose items install could not
// converge on — the kind of bundle `zdt bundle create` refuses to make —
// and checks install refuses each before writing anything, naming the
// items.
func TestInstallRefusesBadItems(t *testing.T) {
	dir := t.TempDir()
	good := release{version: "1.0.0", files: map[string][]byte{"/opt/a": []byte("a"), "/opt/b": []byte("b")}}.build(t, dir)
	es, err := fixtures.ReadTar(good)
	if err != nil {
		t.Fatal(err)
	}
	target := func(to string) []string {
		return []string{`"` + manifests.AnnotationTarget + `":"/opt/b"`, `"` + manifests.AnnotationTarget + `":"` + to + `"`}
	}
	cases := []struct {
		name  string
		edit  []string
		names []string // in the error
	}{
		{"same target", target("/opt/a"), []string{"file b", `"/opt/a" is also the target of file a`}},
		{"target inside another", target("/opt/a/b"), []string{"file b", "inside"}},
		{"state directory", target("/var/lib/zdt/current"), []string{"file b", "zdt's state directory"}},
		{"state lock", target("/var/lib/zdt/lock"), []string{"file b", "zdt's state directory"}},
		{"above the state directory", target("/var/lib"), []string{"file b", "a directory above"}},
		{"systemd unit", target("/etc/systemd/system/" + "zdt-serve.service"), []string{"file b", "systemd unit"}},
		{"hosts.toml", target("/etc/containerd/certs.d/docker.io/hosts.toml"), []string{"file b", "containerd"}},
		{"registries.conf drop-in", target("/etc/containers/registries.conf.d/50-zdt.conf"), []string{"file b", "registries.conf"}},
		{"empty target", target(""), []string{"file b", `target ""`}},
		{"root target", target("/"), []string{"file b", `target "/"`}},
		{"dot target", target("."), []string{"file b", `target "."`}},
		{"relative target", target("opt/b"), []string{"file b", "clean absolute"}},
		{"unclean target", target("/opt/../etc/b"), []string{"file b", "clean absolute"}},
		{"control character", target(`/opt/\u001b[31mb`), []string{"file b", "control character"}},
		{"setuid without allowSpecialBits", []string{`"` + manifests.AnnotationMode + `":"0755"`, `"` + manifests.AnnotationMode + `":"4755"`}, []string{"file a", "file b", "setuid"}},
		{"same kind and name", []string{`"` + manifests.AnnotationName + `":"b"`, `"` + manifests.AnnotationName + `":"a"`}, []string{"file a", "listed twice"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeBundle(t, editRoot(t, es, tc.edit...))
			root := t.TempDir()
			_, err := installArchive(p, root)
			if !errors.Is(err, ErrInvalidItem) {
				t.Fatalf("install = %v, want ErrInvalidItem", err)
			}
			for _, n := range tc.names {
				if !strings.Contains(err.Error(), n) {
					t.Errorf("install = %v, want it to name %q", err, n)
				}
			}
			rootIsEmpty(t, root)
			t.Logf("refused: %v", err)
		})
	}
}

// TestInstallSpecialBits: a setuid file is placed with its bit only when
// the spec says allowSpecialBits, and a re-install leaves it alone.
func TestInstallSpecialBits(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "su"), []byte("su"), 0o644); err != nil {
		t.Fatal(err)
	}
	p := buildSpec(t, dir, "s.zdt", `apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata: {name: s, version: "1"}
components:
  - name: c
    files:
      - {source: `+filepath.Join(dir, "su")+`, sha256: `+sha("su")+`, target: /usr/local/bin/su, mode: "4750", allowSpecialBits: true}
`)
	root := t.TempDir()
	install(t, p, root)
	fi, err := os.Stat(filepath.Join(root, "usr/local/bin/su"))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSetuid == 0 || fi.Mode().Perm() != 0o750 {
		t.Fatalf("placed with mode %v, want setuid 0750", fi.Mode())
	}
	if again := install(t, p, root); again.Applied {
		t.Fatalf("re-install changed things: %+v", again.Plan.Changes)
	}
}

// TestInstallDecompressionBomb installs bundles whose file layer is an
// 8 GiB zstd bomb (256 KiB in the archive), a frame with a 512 MiB window,
// and a file recorded as 1 PiB: install fails naming the file, as a
// verification failure or for want of space, without writing the file or
// anything big, quickly and in little memory.
func TestInstallDecompressionBomb(t *testing.T) {
	dir := t.TempDir()
	good := release{version: "1.0.0", files: map[string][]byte{"/opt/f": []byte("#!/bin/sh\necho f\n")}}.build(t, dir)
	es, err := fixtures.ReadTar(good)
	if err != nil {
		t.Fatal(err)
	}
	mdigest, m, err := fixtures.ItemManifest(es, "file", "f")
	if err != nil {
		t.Fatal(err)
	}
	layer := m.Layers[0].Digest
	swapIn := func(es []fixtures.TarEntry, data []byte) []fixtures.TarEntry {
		out, _, err := fixtures.SwapBlob(es, layer, data)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	swap := func(data []byte) []fixtures.TarEntry { return swapIn(es, data) }
	huge := func() []fixtures.TarEntry {
		out, _, err := fixtures.EditBlob(es, mdigest, func(b []byte) []byte {
			return bytes.Replace(b, []byte(`"`+manifests.AnnotationUncompressedSize+`":"17"`), []byte(`"`+manifests.AnnotationUncompressedSize+`":"1125899906842624"`), 1)
		})
		if err != nil {
			t.Fatal(err)
		}
		return swapIn(out, fixtures.ZstdRLE(8<<30, 0, 20))
	}
	cases := []struct {
		name    string
		entries []fixtures.TarEntry
		want    error
	}{
		{"8 GiB bomb", swap(fixtures.ZstdRLE(8<<30, 0, 20)), bundle.ErrTooLarge},
		{"512 MiB window", swap(fixtures.ZstdRLE(17, 'x', 29)), bundle.ErrCorruptContent},
		{"1 PiB recorded", huge(), syscall.ENOSPC},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeBundle(t, tc.entries)
			root := t.TempDir()
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := installArchive(p, root)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), "/opt/f") && !strings.Contains(err.Error(), "file f") {
				t.Fatalf("install = %v, want %v naming /opt/f", err, tc.want)
			}
			if tc.want != syscall.ENOSPC && !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("install = %v, want a verification failure (exit 3)", err)
			}
			var total int64
			filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
				if err == nil && fi.Mode().IsRegular() {
					total += fi.Size()
				}
				return nil
			})
			if _, err := os.Lstat(filepath.Join(root, "opt", "f")); !os.IsNotExist(err) {
				t.Fatalf("/opt/f was written: %v", err)
			}
			if left := tempFiles(t, root); len(left) > 0 {
				t.Fatalf("temp files left: %v", left)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; total > 4<<20 || took > 5*time.Second || alloc > 128<<20 {
				t.Fatalf("install wrote %d bytes, took %v, allocated %d MiB", total, took, alloc>>20)
			}
			t.Logf("refused in %v, %d bytes under the root, %d MiB allocated: %v", took, total, (after.TotalAlloc-before.TotalAlloc)>>20, err)
		})
	}
}

// TestReservedCoversGenerated: every file install generates and its state
// directory are targets a file item may not take (manifests.ReservedTarget
// holds the list create and install check).
func TestReservedCoversGenerated(t *testing.T) {
	files := generatedFiles(genContext{header: "#\n", serveAddr: DefaultServeAddr, rootDir: "/", items: []ItemState{
		{Item: bundle.Item{Kind: manifests.KindImage, Name: "a", Ref: "docker.io/library/nginx:1"}},
		{Item: bundle.Item{Kind: manifests.KindImage, Name: "b", Ref: "quay.io/x/y:1"}},
	}})
	paths := []string{StateDir, StateDir + "/lock", StateDir + "/current", StateDir + "/registry"}
	for p := range files {
		paths = append(paths, p)
	}
	for _, p := range paths {
		if manifests.ReservedTarget("/"+p) == "" {
			t.Errorf("/%s is not reserved", p)
		}
	}
	if why := manifests.ReservedTarget("/etc/containerd/certs.d/docker.io/ca.crt"); why != "" {
		t.Errorf("a CA next to hosts.toml is refused: %s", why)
	}
}
