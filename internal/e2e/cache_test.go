package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"zdt.dev/zdt/internal/testregistry"
)

// cacheEntry and cacheLs are what `zdt cache ls --output json` prints.
type cacheEntry struct {
	Digest   string    `json:"digest"`
	Kind     string    `json:"kind"`
	LastUsed time.Time `json:"lastUsed"`
	Size     int64     `json:"size"`
}

type cacheTotals struct {
	Blobs, Entries, Manifests, Partials int
	Size                                int64
}

type cacheLs struct {
	Dir     string       `json:"dir"`
	Entries []cacheEntry `json:"entries"`
	Totals  cacheTotals  `json:"totals"`
}

func lsCache(t *testing.T, dir, cache string) cacheLs {
	t.Helper()
	r := zdt(t, dir, "cache", "ls", "--cache-dir", cache, "--output", "json").must(t, "cache ls")
	var l cacheLs
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
		t.Fatalf("cache ls: %v\n%s", err, r.stdout)
	}
	return l
}

// pushOneLayer pushes an image of one incompressible layer of about size
// bytes and returns the layer's digest and size and the manifest's digest.
func pushOneLayer(t *testing.T, reg *testregistry.Registry, repoTag string, size int64) (layer string, layerSize int64, manifest string) {
	t.Helper()
	l, err := random.Layer(size, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.ConfigMediaType(mutate.MediaType(img, types.OCIManifestSchema1), types.OCIConfigJSON)
	m := reg.PushImage(t, testregistry.Auth{}, repoTag, img)
	d, _ := l.Digest()
	n, _ := l.Size()
	return d.String(), n, m.String()
}

func writeImageSpec(t *testing.T, dir, name, ref string) string {
	t.Helper()
	p := filepath.Join(dir, name+".yaml")
	spec := fmt.Sprintf("apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: %s, version: 1.0.0}\ncomponents:\n  - name: c\n    images: [%s]\n", name, ref)
	if err := os.WriteFile(p, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCacheCLI drives the cache through the built CLI: a create killed
// (SIGKILL) mid-layer leaves a partial that `cache ls` shows and the next
// create resumes with a Range request from its offset; `cache prune`
// evicts least recently used first (a manifest with its layer), refuses
// while a create holds the cache, and --all empties it.
func TestCacheCLI(t *testing.T) {
	faults := &testregistry.Faults{}
	reg := testregistry.New(t, testregistry.Options{Middleware: faults.Middleware})
	bigLayer, bigSize, bigManifest := pushOneLayer(t, reg, "app/big:1", 3<<20)
	smallLayer, _, smallManifest := pushOneLayer(t, reg, "app/small:1", 4<<10)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	bigSpec := writeImageSpec(t, dir, "big", reg.Ref("app/big:1"))
	smallSpec := writeImageSpec(t, dir, "small", reg.Ref("app/small:1"))

	// A create killed while the registry has sent 1 MiB of the layer.
	cut := int64(1 << 20)
	faults.SetHangAfter(cut)
	cmd := exec.Command(zdtBin, "bundle", "create", "-f", bigSpec, "--cache-dir", cache, "-o", "big.zdt")
	cmd.Dir = dir
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(cache, "partial", "sha256", strings.TrimPrefix(bigLayer, "sha256:"))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if fi, err := os.Stat(partial); err == nil && fi.Size() == cut {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("the create wrote no partial of the layer")
		}
	}
	cmd.Process.Signal(syscall.SIGKILL)
	cmd.Wait()
	// The killed create's request is logged once its connection closes.
	for deadline := time.Now().Add(5 * time.Second); reg.BlobBytes(bigLayer) != cut; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the killed create's layer GET sent %d bytes, want %d", reg.BlobBytes(bigLayer), cut)
		}
	}
	l := lsCache(t, dir, cache)
	// The partial is the most recently used entry; a blob the same create
	// wrote may share its timestamp, so ties are in either order.
	pi := slices.IndexFunc(l.Entries, func(e cacheEntry) bool { return e.Kind == "partial" })
	if l.Totals.Partials != 1 || pi < 0 || l.Entries[pi].Digest != bigLayer || l.Entries[pi].Size != cut || l.Entries[0].LastUsed.After(l.Entries[pi].LastUsed) {
		t.Fatalf("cache ls after the kill: %+v, want the layer's partial of %d bytes, the most recently used", l, cut)
	}

	// The next create asks only for the rest.
	faults.SetHangAfter(0)
	reg.Reset()
	r := zdt(t, dir, "bundle", "create", "-f", bigSpec, "--cache-dir", cache, "-o", "big.zdt", "--output", "json").must(t, "create after the kill")
	var created struct {
		Fetch struct{ ResumedBlobs, ResumedBytes int64 }
	}
	if err := json.Unmarshal([]byte(r.stdout), &created); err != nil {
		t.Fatal(err)
	}
	var gets []testregistry.Request
	for _, q := range reg.Log() {
		if q.Method == http.MethodGet && strings.HasSuffix(q.Path, "/blobs/"+bigLayer) {
			gets = append(gets, q)
		}
	}
	wantRange := fmt.Sprintf("bytes=%d-%d", cut, bigSize-1)
	if len(gets) != 1 || gets[0].Range != wantRange || gets[0].Bytes != bigSize-cut {
		t.Fatalf("layer GETs after the kill: %+v, want one for %q of %d bytes", gets, wantRange, bigSize-cut)
	}
	if created.Fetch.ResumedBlobs != 1 || created.Fetch.ResumedBytes != cut {
		t.Errorf("create's fetch: %+v, want 1 blob resumed from %d bytes", created.Fetch, cut)
	}
	t.Logf("layer of %d bytes: %d fetched again after the kill (without resume: %d)", bigSize, gets[0].Bytes, bigSize)
	zdt(t, dir, "bundle", "verify", "big.zdt", "--insecure-skip-signature").must(t, "verify")

	zdt(t, dir, "bundle", "create", "-f", smallSpec, "--cache-dir", cache, "-o", "small.zdt").must(t, "create small")
	l = lsCache(t, dir, cache)
	kinds := map[string]string{}
	var sum int64
	for i, e := range l.Entries {
		kinds[e.Digest] = e.Kind
		sum += e.Size
		if i > 0 && e.LastUsed.After(l.Entries[i-1].LastUsed) {
			t.Errorf("entries not most recently used first: %v after %v", e.LastUsed, l.Entries[i-1].LastUsed)
		}
	}
	if sum != l.Totals.Size || l.Totals.Entries != len(l.Entries) || l.Totals.Partials != 0 ||
		l.Totals.Manifests+l.Totals.Blobs != l.Totals.Entries {
		t.Errorf("totals %+v, the entries: %d of %d bytes", l.Totals, len(l.Entries), sum)
	}
	for d, kind := range map[string]string{bigLayer: "blob", smallLayer: "blob", bigManifest: "manifest", smallManifest: "manifest"} {
		if kinds[d] != kind {
			t.Errorf("cache ls: %s is a %q, want a %s", d, kinds[d], kind)
		}
	}
	n0 := l.Totals.Entries
	text := zdt(t, dir, "cache", "ls", "--cache-dir", cache).must(t, "cache ls").stdout
	if !strings.Contains(text, "KIND") || !strings.Contains(text, bigLayer) ||
		!strings.Contains(text, fmt.Sprintf("%d manifests, %d blobs, 0 partials", l.Totals.Manifests, l.Totals.Blobs)) {
		t.Errorf("cache ls text:\n%s", text)
	}

	// A running create (its shared lock) makes prune refuse, removing nothing.
	lock, err := os.Open(filepath.Join(cache, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_SH); err != nil {
		t.Fatal(err)
	}
	r = zdt(t, dir, "cache", "prune", "--all", "--cache-dir", cache)
	lock.Close()
	if r.code != 1 || !strings.Contains(r.stderr, "in use by a running create") {
		t.Fatalf("prune while a create runs: exit %d, %s", r.code, r.stderr)
	}
	if n := lsCache(t, dir, cache).Totals.Entries; n != n0 {
		t.Fatalf("a refused prune left %d entries, want %d", n, n0)
	}

	// The big image's manifest was used last, its layer long ago: evicting
	// the layer evicts the manifest too, and nothing of the small image.
	now := time.Now().Add(time.Hour)
	os.Chtimes(filepath.Join(cache, "blobs", "sha256", strings.TrimPrefix(bigManifest, "sha256:")), now, time.Time{})
	old := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(cache, "blobs", "sha256", strings.TrimPrefix(bigLayer, "sha256:")), old, old)
	r = zdt(t, dir, "cache", "prune", "--max-size", fmt.Sprint(l.Totals.Size-bigSize), "--cache-dir", cache, "--output", "json").must(t, "prune --max-size")
	var pruned struct {
		Removed     []cacheEntry `json:"removed"`
		RemovedSize int64        `json:"removedSize"`
		Kept        cacheTotals  `json:"kept"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &pruned); err != nil {
		t.Fatal(err)
	}
	at := map[string]int{}
	for i, e := range pruned.Removed {
		at[e.Digest] = i + 1
	}
	if at[bigManifest] == 0 || at[bigLayer] == 0 || at[bigManifest] > at[bigLayer] || at[smallManifest] != 0 || at[smallLayer] != 0 {
		t.Fatalf("prune removed %+v, want the big manifest before its layer, nothing of the small image", pruned.Removed)
	}
	after := lsCache(t, dir, cache)
	if after.Totals.Entries != n0-len(pruned.Removed) || pruned.Kept != after.Totals || after.Totals.Size > l.Totals.Size-bigSize {
		t.Fatalf("after prune: %+v (prune says kept %+v), before %+v", after.Totals, pruned.Kept, l.Totals)
	}
	reg.Reset()
	zdt(t, dir, "bundle", "create", "-f", bigSpec, "--cache-dir", cache, "-o", "big2.zdt").must(t, "create after prune")
	if gets := reg.BlobGets()[bigLayer]; gets != 1 {
		t.Errorf("the evicted layer was fetched %d times, want once", gets)
	}

	for _, args := range [][]string{
		{"cache", "prune"},
		{"cache", "prune", "--all", "--max-size", "1"},
		{"cache", "prune", "--max-size", "10XB"},
		{"cache", "ls", "extra"},
	} {
		if r := zdt(t, dir, append(args, "--cache-dir", cache)...); r.code != 2 {
			t.Errorf("zdt %v: exit %d, want 2 (usage)\n%s", args, r.code, r.stderr)
		}
	}
	r = zdt(t, dir, "cache", "prune", "--all", "--cache-dir", cache).must(t, "prune --all")
	if n := lsCache(t, dir, cache).Totals.Entries; n != 0 {
		t.Fatalf("prune --all left %d entries", n)
	}
	if !strings.Contains(r.stdout, "removed ") || !strings.Contains(r.stdout, "0 B left") {
		t.Errorf("prune --all said %q", r.stdout)
	}
	if l := lsCache(t, dir, cache); l.Totals.Entries != 0 || len(l.Entries) != 0 {
		t.Fatalf("after prune --all: %+v", l)
	}
	if ents, _ := os.ReadDir(filepath.Join(cache, "sources", "sha256")); len(ents) != 0 {
		t.Errorf("prune --all left source records: %v", ents)
	}
}
