package installer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
)

// A kept version whose bytes were changed in the file store (torn or
// tampered) is not put back: restoreFile fails with ErrContentMismatch and
// the target keeps what it held. An intact one is restored.
func TestRestoreFileRefusesTamperedKeptVersion(t *testing.T) {
	dir := t.TempDir()
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	kept := strings.Repeat("version 1\n", 1<<17) // > one copy chunk
	d := digest.FromString(kept).String()
	sp := filepath.Join(dir, filepath.FromSlash(storePath(d)))
	if err := os.MkdirAll(filepath.Dir(sp), 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "etc", "app.conf")
	if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(target, []byte("version 2\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	it := ItemState{Item: bundle.Item{Kind: "file", Name: "app", Target: "/etc/app.conf", Mode: "0644"}, FileDigest: d}

	if err := os.WriteFile(sp, []byte(strings.Replace(kept, "1", "X", 1)), 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := restoreFile(context.Background(), root, it); !errors.Is(err, ErrContentMismatch) || !errors.Is(err, bundle.ErrVerification) {
		t.Fatalf("restoreFile of a tampered version = %v, want ErrContentMismatch", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "version 2\n" {
		t.Fatalf("target changed to %d bytes by a refused restore", len(b))
	}
	if ents, _ := os.ReadDir(filepath.Dir(target)); len(ents) != 1 {
		t.Errorf("temp files left next to the target: %v", ents)
	}

	if err := os.Chmod(sp, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(sp, []byte(kept), 0o444); err != nil {
		t.Fatal(err)
	}
	if _, err := restoreFile(context.Background(), root, it); err != nil {
		t.Fatalf("restoreFile: %v", err)
	}
	if b, _ := os.ReadFile(target); string(b) != kept {
		t.Fatalf("target holds %d bytes, want the kept version", len(b))
	}
}
