package installer

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/registry"
)

// rewriteHook is a Registry whose Import, once every placement has
// checked its layer (Checked.Wait), runs rewrite before the real import:
// the archive written to after its layers were hashed, before it is kept.
type rewriteHook struct {
	*registry.Store
	rewrite func()
}

func (h rewriteHook) Import(ctx context.Context, a *bundle.Archive, opts registry.ImportOptions) (registry.ImportResult, error) {
	if c := opts.Checked; c != nil && c.Wait != nil && len(c.Digests) > 0 {
		if err := c.Wait(ctx); err != nil {
			return registry.ImportResult{}, err
		}
		h.rewrite()
	}
	return h.Store.Import(ctx, a, opts)
}

// trustFreshArchives lets an install rely on its placements' checks of an
// archive changed just now (racyArchive) for the rest of t.
func trustFreshArchives(t *testing.T) {
	old := racyArchive
	racyArchive = 0
	t.Cleanup(func() { racyArchive = old })
}

// TestArchiveRewrittenAfterPlacementNotKept: the archive's owner
// overwrites a placed file's layer in place (same size, modification
// time set back) after the placement hashed it, before the import keeps
// the archive. The import does not hash that layer again (it relies on the
// placement's check), so only the archive's change time tells: the
// install fails naming the archive, nothing is kept, no generation is
// recorded.
func TestArchiveRewrittenAfterPlacementNotKept(t *testing.T) {
	t.Run("unchanged since long", func(t *testing.T) { archiveRewrittenAfterPlacement(t, false) })
	// Changed within a timestamp tick of the install's start (a write then
	// might not move it): the import hashes every layer itself.
	t.Run("just written", func(t *testing.T) { archiveRewrittenAfterPlacement(t, true) })
}

func archiveRewrittenAfterPlacement(t *testing.T, fresh bool) {
	if !fresh {
		old := racyArchive
		racyArchive = 20 * time.Millisecond
		t.Cleanup(func() { racyArchive = old })
	}
	marker := []byte("placed layer, rewritten afterwards ")
	big := append([]byte{0x1f, 0x8b, 0x08}, bytes.Repeat(marker, 60_000)...) // stored as is
	p := release{version: "1.0.0", images: map[string]int64{"registry.test/app/a:1": 1},
		files: map[string][]byte{"/opt/big": big}}.build(t, t.TempDir())
	if !fresh {
		time.Sleep(2 * racyArchive) // not changed within a tick of the install's start
	}

	rewrites := 0
	rewrite := func() {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Error(err)
			return
		}
		i := bytes.Index(b, marker)
		if i < 0 {
			t.Error("the file's layer is not in the archive")
			return
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Error(err)
			return
		}
		f, err := os.OpenFile(p, os.O_WRONLY, 0) // in place: the inode the kept link would share
		if err != nil {
			t.Error(err)
			return
		}
		off := int64(i + len(marker)*30_000)
		if _, err := f.WriteAt([]byte{b[off] ^ 0x55}, off); err != nil {
			t.Error(err)
		}
		f.Close()
		if err := os.Chtimes(p, fi.ModTime(), fi.ModTime()); err != nil {
			t.Error(err)
		}
		if after, err := os.Stat(p); err != nil || after.Size() != fi.Size() || !after.ModTime().Equal(fi.ModTime()) {
			t.Errorf("the rewrite shows in size or modification time: %v", err)
		}
		rewrites++
	}

	ctx := context.Background()
	a, err := bundle.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	root := t.TempDir()
	reg := rewriteHook{Store: openStore(t, root, false), rewrite: rewrite}
	_, err = Install(ctx, a, Options{Root: root, ToolVersion: "test", Registry: reg})
	if rewrites != 1 {
		t.Fatalf("the archive was rewritten %d times, want once (after the placement)", rewrites)
	}
	if fresh {
		if !errors.Is(err, bundle.ErrDigestMismatch) {
			t.Fatalf("install of a just written archive rewritten after its layer was placed: %v, want a digest mismatch", err)
		}
	} else if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), "modified") || !errors.Is(err, registry.ErrBadStore) {
		t.Fatalf("install of an archive rewritten after its layer was placed: %v, want an error naming %s as modified", err, p)
	}
	if kept := keptArchives(t, root); len(kept) > 0 {
		t.Fatalf("the rewritten archive was kept: %v", kept)
	}
	if tmps, _ := filepath.Glob(filepath.Join(registry.StoreDir(root), "archives", ".*")); len(tmps) > 0 {
		t.Fatalf("temporary links left: %v", tmps)
	}
	if st, err := GetStatus(ctx, root); err == nil && st.Generation != nil {
		t.Fatalf("a generation was recorded: %+v", st.Generation)
	}
}
