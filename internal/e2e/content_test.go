package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/internal/fixtures"
	"zdt.dev/zdt/manifests"
)

// fileBundle creates, through the CLI, an unsigned bundle of one file
// (/opt/f, item "f") in dir and returns its entries.
func fileBundle(t *testing.T, dir string) []fixtures.TarEntry {
	t.Helper()
	data := []byte("#!/bin/sh\necho f\n")
	sum := sha256.Sum256(data)
	if err := os.WriteFile(filepath.Join(dir, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	spec := "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: c, version: \"1\"}\ncomponents:\n  - name: c\n    files:\n" +
		"      - {name: f, source: f, sha256: " + hex.EncodeToString(sum[:]) + ", target: /opt/f}\n"
	if err := os.WriteFile(filepath.Join(dir, "zdt.yaml"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	zdt(t, dir, "bundle", "create", "-o", "good.zdt").must(t, "create")
	es, err := fixtures.ReadTar(filepath.Join(dir, "good.zdt"))
	if err != nil {
		t.Fatal(err)
	}
	return es
}

// TestContentAttacksCLI: a file layer that is a zstd bomb (8 GiB in
// 256 KiB) or corrupt zstd fails `bundle verify` and `install` with exit
// code 3 (verification failed), and install writes nothing; `bundle
// inspect` of a bundle whose names carry terminal escapes and newlines
// prints them escaped.
func TestContentAttacksCLI(t *testing.T) {
	dir := t.TempDir()
	es := fileBundle(t, dir)
	_, m, err := fixtures.ItemManifest(es, "file", "f")
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) {
		out, _, err := fixtures.SwapBlob(es, m.Layers[0].Digest, data)
		if err != nil {
			t.Fatal(err)
		}
		if err := fixtures.WriteTar(filepath.Join(dir, name), out); err != nil {
			t.Fatal(err)
		}
	}
	write("bomb.zdt", fixtures.ZstdRLE(8<<30, 0, 20))
	write("corrupt.zdt", append([]byte{0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x50}, []byte("not zstd at all")...))
	for _, b := range []string{"bomb.zdt", "corrupt.zdt"} {
		t.Run(b, func(t *testing.T) {
			r := zdt(t, dir, "bundle", "verify", "--insecure-skip-signature", b)
			if r.code != 3 || !strings.Contains(r.stderr, "file f") {
				t.Fatalf("verify %s: exit %d, want 3 naming file f\n%s", b, r.code, r.stderr)
			}
			root := filepath.Join(t.TempDir(), "root")
			os.MkdirAll(root, 0o755)
			r = zdt(t, dir, "install", "--bundle", b, "--root", root, "--insecure-skip-signature")
			if r.code != 3 {
				t.Fatalf("install %s: exit %d, want 3\n%s", b, r.code, r.stderr)
			}
			if _, err := os.Lstat(filepath.Join(root, "opt", "f")); !os.IsNotExist(err) {
				t.Fatalf("install %s wrote /opt/f", b)
			}
			t.Logf("install: %s", strings.TrimSpace(r.stderr))
		})
	}

	t.Run("inspect escapes names", func(t *testing.T) {
		// Rewrite the item's name in the root (and its copy in
		// index.json): the bundle is unverified, its bytes anyone's.
		esc, _ := json.Marshal("\x1b[2J\x1b[31mowned\nfake line")
		edit := func(b []byte) []byte {
			return []byte(strings.ReplaceAll(string(b), `"`+manifests.AnnotationName+`":"f"`, `"`+manifests.AnnotationName+`":`+string(esc)))
		}
		var idx ocispec.Index
		for _, e := range es {
			if e.Hdr.Name == "index.json" {
				if err := json.Unmarshal(e.Data, &idx); err != nil {
					t.Fatal(err)
				}
			}
		}
		out := es
		for _, d := range idx.Manifests {
			if d.Annotations[manifests.AnnotationBundleRoot] != "" {
				if out, _, err = fixtures.EditBlob(es, d.Digest, edit); err != nil {
					t.Fatal(err)
				}
			}
		}
		for i, e := range out {
			if e.Hdr.Name == "index.json" {
				out[i].Data = edit(e.Data)
			}
		}
		if err := fixtures.WriteTar(filepath.Join(dir, "evil.zdt"), out); err != nil {
			t.Fatal(err)
		}
		r := zdt(t, dir, "bundle", "inspect", "evil.zdt").must(t, "inspect")
		if strings.ContainsAny(r.stdout, "\x1b") || strings.Contains(r.stdout, "\nfake line") {
			t.Fatalf("inspect printed the name raw:\n%q", r.stdout)
		}
		if !strings.Contains(r.stdout, `\x1b[2J\x1b[31mowned\nfake line`) {
			t.Fatalf("inspect does not show the escaped name:\n%s", r.stdout)
		}
	})
}
