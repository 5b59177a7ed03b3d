package build

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/internal/testregistry"
)

// TestPruneKeepsGraphsWhole: evicting one layer of a multi-platform image
// evicts the platform manifest, the index and the bundle root that lead to
// it, each before what it points at (a prune stopped half-way leaves no
// manifest whose graph is incomplete), and nothing else; the next create
// fetches only that layer, and its archive verifies.
func TestPruneKeepsGraphsWhole(t *testing.T) {
	reg := testregistry.New(t, testregistry.Options{})
	idx := testregistry.RandomIndex(t, []string{"linux/amd64", "linux/arm64"}, nil, 2, 8<<10)
	reg.PushIndex(t, testregistry.Auth{}, "app/multi:1", idx)
	_, per := indexDigests(t, idx)
	victim := digest.Digest(per["linux/arm64"][len(per["linux/arm64"])-1])
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	spec := writeSpec(t, dir, imagesSpec(reg.Ref("app/multi:1")))
	createIn(t, dir, "first", spec, CreateOptions{CacheDir: cache})
	ctx := context.Background()
	before, err := ListCache(ctx, cache)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(cache, "blobs", "sha256", victim.Encoded()), old, old); err != nil {
		t.Fatal(err)
	}
	res, err := PruneCache(ctx, cache, PruneOptions{MaxSize: before.Totals.Size - 1})
	if err != nil {
		t.Fatal(err)
	}
	pos := map[digest.Digest]int{}
	for i, e := range res.Removed {
		pos[e.Digest] = i + 1
	}
	if pos[victim] == 0 || res.Removed[len(res.Removed)-1].Digest != victim {
		t.Fatalf("removed %+v, want the victim layer last", res.Removed)
	}
	manifests := 0
	for _, e := range res.Removed {
		if e.Kind == CacheKindManifest {
			manifests++
		} else if e.Digest != victim {
			t.Errorf("removed blob %s, which was not needed to get under the size", e.Digest)
		}
	}
	if manifests != 3 { // the arm64 manifest, the index, the bundle root
		t.Errorf("removed %d manifests, want 3 (platform manifest, index, bundle root): %+v", manifests, res.Removed)
	}
	after, _ := ListCache(ctx, cache)
	if after.Totals != res.Kept || after.Totals.Entries != before.Totals.Entries-len(res.Removed) {
		t.Errorf("after: %+v, prune says kept %+v", after.Totals, res.Kept)
	}
	reg.Reset()
	again := createIn(t, dir, "again", spec, CreateOptions{CacheDir: cache})
	if gets := reg.BlobGets(); len(gets) != 1 || gets[victim.String()] != 1 || again.Fetch.FetchedBlobs != 1 {
		t.Errorf("after the prune, fetched %v (%d blobs), want only the evicted layer", gets, again.Fetch.FetchedBlobs)
	}
	cacheBlobs(t, cache)
}

// TestPruneWaitsForNoCreate: prune fails with ErrCacheBusy while a create
// holds the cache's lock, and a create opening the cache waits for a
// prune to finish.
func TestPruneWaitsForNoCreate(t *testing.T) {
	cache := t.TempDir()
	s, err := newBlobStore(cache, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := PruneCache(context.Background(), cache, PruneOptions{All: true}); !errors.Is(err, ErrCacheBusy) {
		t.Fatalf("prune during a create: %v, want ErrCacheBusy", err)
	}
	s.close()
	if _, err := PruneCache(context.Background(), cache, PruneOptions{All: true}); err != nil {
		t.Fatalf("prune after the create: %v", err)
	}
	f, err := os.Open(filepath.Join(cache, cacheLockFile))
	if err != nil {
		t.Fatal(err)
	}
	syscall.Flock(int(f.Fd()), syscall.LOCK_EX) // a prune running
	opened := make(chan error, 1)
	go func() {
		s, err := newBlobStore(cache, true)
		if err == nil {
			s.close()
		}
		opened <- err
	}()
	select {
	case err := <-opened:
		t.Fatalf("a create opened the cache during a prune (%v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	f.Close()
	if err := <-opened; err != nil {
		t.Fatal(err)
	}
}
