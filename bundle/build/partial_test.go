package build

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/testregistry"
)

// bigImage is an image with one incompressible layer of about size bytes
// in a registry with switchable faults.
type bigImage struct {
	reg    *testregistry.Registry
	faults *testregistry.Faults
	ref    string
	layer  ocispec.Descriptor
	bytes  []byte // the layer's bytes
	source string // the partial identity's source
}

func newBigImage(t *testing.T, size int64) *bigImage {
	t.Helper()
	f := &testregistry.Faults{}
	reg := testregistry.New(t, testregistry.Options{Middleware: f.Middleware})
	l, err := random.Layer(size, types.OCILayer)
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, l)
	if err != nil {
		t.Fatal(err)
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	reg.PushImage(t, testregistry.Auth{}, "app/big:1", img)
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	d := digest.FromBytes(b)
	return &bigImage{reg: reg, faults: f, ref: reg.Ref("app/big:1"), bytes: b, source: reg.Host + "/app/big",
		layer: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: d, Size: int64(len(b))}}
}

// layerGets lists the GETs of the big layer in the registry's log.
func (b *bigImage) layerGets() []testregistry.Request {
	var out []testregistry.Request
	for _, q := range b.reg.Log() {
		if q.Method == http.MethodGet && strings.HasSuffix(q.Path, "/blobs/"+b.layer.Digest.String()) {
			out = append(out, q)
		}
	}
	return out
}

// plantPartial writes a partial of the layer (data) with an identity record.
func plantPartial(t *testing.T, cache string, meta partialMeta, data []byte) string {
	t.Helper()
	dir := filepath.Join(cache, filepath.FromSlash(dirPartial))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, meta.Digest.Encoded())
	testregistry.WriteFile(t, p, data)
	b, _ := json.Marshal(meta)
	testregistry.WriteFile(t, p+".json", b)
	return p
}

func assertNoPartials(t *testing.T, cache string) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Join(cache, filepath.FromSlash(dirPartial)))
	if len(ents) > 0 {
		t.Errorf("partials left behind: %v", ents)
	}
}

// TestResumePartialAfterKill kills a create (SIGKILL) while the registry
// has sent part of a large layer, then creates again with the same cache:
// the second create asks for the rest with a Range request starting at the
// partial's size, and the layer's bytes served over both runs add up to
// its size once, not twice.
func TestResumePartialAfterKill(t *testing.T) {
	b := newBigImage(t, 4<<20)
	cut := int64(3 << 19) // 1.5 MiB
	b.faults.SetHangAfter(cut)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	spec := writeSpec(t, dir, imagesSpec(b.ref))
	out := filepath.Join(dir, "out", "b.zdt")
	os.MkdirAll(filepath.Dir(out), 0o755)

	cmd := exec.Command(os.Args[0], "-test.run=^TestResumeHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ZDT_RESUME_SPEC="+spec.File, "ZDT_RESUME_OUT="+out, "ZDT_RESUME_CACHE="+cache)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	partial := filepath.Join(cache, filepath.FromSlash(dirPartial), b.layer.Digest.Encoded())
	deadline := time.Now().Add(20 * time.Second)
	for {
		if fi, err := os.Stat(partial); err == nil && fi.Size() == cut {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatal("the create did not write the partial")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatal("the create was not killed mid-fetch")
	}
	// The killed create's request ends when its connection closes.
	var first []testregistry.Request
	for deadline := time.Now().Add(5 * time.Second); len(first) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		first = b.layerGets()
	}
	if len(first) != 1 || first[0].Bytes != cut {
		t.Fatalf("the killed create's layer GETs: %+v, want one of %d bytes", first, cut)
	}

	b.faults.SetHangAfter(0)
	b.reg.Reset()
	res := createIn(t, dir, "resumed", spec, CreateOptions{CacheDir: cache})
	gets := b.layerGets()
	wantRange := fmt.Sprintf("bytes=%d-%d", cut, b.layer.Size-1)
	if len(gets) != 1 || gets[0].Range != wantRange || gets[0].Status != http.StatusPartialContent {
		t.Fatalf("resumed create's layer GETs: %+v, want one 206 for %q", gets, wantRange)
	}
	served := first[0].Bytes + gets[0].Bytes
	if served != b.layer.Size {
		t.Errorf("the layer's bytes served over both creates: %d, want its size %d", served, b.layer.Size)
	}
	if res.Fetch.ResumedBlobs != 1 || res.Fetch.ResumedBytes != cut {
		t.Errorf("Fetch = %+v, want 1 blob resumed from %d bytes", res.Fetch, cut)
	}
	t.Logf("layer %d bytes: re-downloaded after the kill %d (without resume: %d)", b.layer.Size, gets[0].Bytes, b.layer.Size)
	cacheBlobs(t, cache)
	assertNoPartials(t, cache)
}

// TestRetryResumesBrokenFetch: a registry that stalls after 1.5 MiB of
// every answer still delivers a 4 MiB layer within one create, because
// each retry asks only for the rest.
func TestRetryResumesBrokenFetch(t *testing.T) {
	b := newBigImage(t, 4<<20)
	cut := int64(3 << 19)
	b.faults.SetHangAfter(cut)
	dir := t.TempDir()
	spec := writeSpec(t, dir, imagesSpec(b.ref))
	createIn(t, dir, "b", spec, CreateOptions{CacheDir: filepath.Join(dir, "cache"), StallTimeout: 500 * time.Millisecond})
	gets := b.layerGets()
	var served int64
	var ranges []string
	for _, q := range gets {
		served += q.Bytes
		ranges = append(ranges, q.Range)
	}
	want := []string{"", fmt.Sprintf("bytes=%d-%d", cut, b.layer.Size-1), fmt.Sprintf("bytes=%d-%d", 2*cut, b.layer.Size-1)}
	if strings.Join(ranges, ",") != strings.Join(want, ",") {
		t.Errorf("ranges asked for: %q, want %q", ranges, want)
	}
	if served != b.layer.Size {
		t.Errorf("served %d bytes of the layer, want its size %d", served, b.layer.Size)
	}
}

// TestResumeRangeIgnored: a registry that answers a Range request with
// 200 and the whole blob gets its answer used from zero; the result is
// right and the partial's bytes are not counted twice.
func TestResumeRangeIgnored(t *testing.T) {
	b := newBigImage(t, 2<<20)
	b.faults.SetIgnoreRange(true)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	have := int64(1 << 20)
	plantPartial(t, cache, partialMeta{Digest: b.layer.Digest, Size: b.layer.Size, Source: b.source}, b.bytes[:have])
	spec := writeSpec(t, dir, imagesSpec(b.ref))
	res := createIn(t, dir, "b", spec, CreateOptions{CacheDir: cache})
	gets := b.layerGets()
	if len(gets) != 1 || gets[0].Range == "" || gets[0].Status != http.StatusOK || gets[0].Bytes != b.layer.Size {
		t.Fatalf("layer GETs %+v, want one Range request answered 200 with the whole blob", gets)
	}
	if res.Fetch.ResumedBlobs != 0 {
		t.Errorf("Fetch = %+v: nothing was resumed", res.Fetch)
	}
	cacheBlobs(t, cache)
	assertNoPartials(t, cache)
}

// TestResumeTamperedPartial: a partial whose bytes are not the blob's
// (planted, or torn) is resumed, fails the final digest check, and the
// blob is fetched again from zero, once: the archive holds the right bytes
// and none of the planted ones.
func TestResumeTamperedPartial(t *testing.T) {
	b := newBigImage(t, 2<<20)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	have := int64(1 << 20)
	evil := bytes.Repeat([]byte("EVIL"), int(have/4))
	plantPartial(t, cache, partialMeta{Digest: b.layer.Digest, Size: b.layer.Size, Source: b.source}, evil)
	spec := writeSpec(t, dir, imagesSpec(b.ref))
	res := createIn(t, dir, "b", spec, CreateOptions{CacheDir: cache})
	gets := b.layerGets()
	if len(gets) != 2 ||
		gets[0].Range != fmt.Sprintf("bytes=%d-%d", have, b.layer.Size-1) || gets[0].Status != http.StatusPartialContent ||
		gets[1].Range != "" || gets[1].Status != http.StatusOK || gets[1].Bytes != b.layer.Size {
		t.Fatalf("layer GETs %+v, want the rest, then the whole blob once", gets)
	}
	archive, err := os.ReadFile(res.Path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(archive, evil[:256]) {
		t.Fatal("the planted bytes reached the archive")
	}
	if !bytes.Contains(archive, b.bytes) {
		t.Fatal("the archive lacks the layer's bytes")
	}
	if res.Fetch.ResumedBlobs != 0 {
		t.Errorf("Fetch = %+v: a restarted blob counts as not resumed", res.Fetch)
	}
	cacheBlobs(t, cache)
	assertNoPartials(t, cache)
}

// TestPartialIdentity: a partial is appended to only when its identity
// record names the same digest, size and source; any other partial is
// started again from zero (no Range request), never appended to.
func TestPartialIdentity(t *testing.T) {
	for _, tc := range []struct {
		name  string
		meta  func(b *bigImage) *partialMeta
		data  func(b *bigImage) []byte
		resum bool
	}{
		{"same blob and source", func(b *bigImage) *partialMeta {
			return &partialMeta{Digest: b.layer.Digest, Size: b.layer.Size, Source: b.source}
		}, func(b *bigImage) []byte { return b.bytes[:1<<19] }, true},
		{"another source", func(b *bigImage) *partialMeta {
			return &partialMeta{Digest: b.layer.Digest, Size: b.layer.Size, Source: "evil.example/app/big"}
		}, func(b *bigImage) []byte { return b.bytes[:1<<19] }, false},
		{"another size", func(b *bigImage) *partialMeta {
			return &partialMeta{Digest: b.layer.Digest, Size: b.layer.Size + 1, Source: b.source}
		}, func(b *bigImage) []byte { return b.bytes[:1<<19] }, false},
		{"another digest", func(b *bigImage) *partialMeta {
			return &partialMeta{Digest: digest.FromString("other"), Size: b.layer.Size, Source: b.source}
		}, func(b *bigImage) []byte { return b.bytes[:1<<19] }, false},
		{"no record", func(*bigImage) *partialMeta { return nil }, func(b *bigImage) []byte { return b.bytes[:1<<19] }, false},
		{"longer than the blob", func(b *bigImage) *partialMeta {
			return &partialMeta{Digest: b.layer.Digest, Size: b.layer.Size, Source: b.source}
		}, func(b *bigImage) []byte { return append(append([]byte(nil), b.bytes...), 'x') }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBigImage(t, 2<<20)
			dir := t.TempDir()
			cache := filepath.Join(dir, "cache")
			m := tc.meta(b)
			p := plantPartial(t, cache, partialMeta{Digest: b.layer.Digest, Size: b.layer.Size, Source: b.source}, tc.data(b))
			if m == nil {
				os.Remove(p + ".json")
			} else {
				raw, _ := json.Marshal(m)
				testregistry.WriteFile(t, p+".json", raw)
			}
			res := createIn(t, dir, "b", writeSpec(t, dir, imagesSpec(b.ref)), CreateOptions{CacheDir: cache})
			gets := b.layerGets()
			if len(gets) != 1 || (gets[0].Range != "") != tc.resum {
				t.Fatalf("layer GETs %+v, resume %v", gets, tc.resum)
			}
			if tc.resum != (res.Fetch.ResumedBlobs == 1) {
				t.Errorf("Fetch = %+v, resume %v", res.Fetch, tc.resum)
			}
			cacheBlobs(t, cache)
			assertNoPartials(t, cache)
		})
	}
}

// TestCleanStalePartials: at create start, temp files and partials that
// no running create holds are removed once stale (a partial without an
// identity record at once, one with a record after stalePartial); what a
// running create holds (flock) stays, however old.
func TestCleanStalePartials(t *testing.T) {
	dir := t.TempDir()
	s, err := newBlobStore(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	pdir := filepath.Join(dir, filepath.FromSlash(dirPartial))
	os.MkdirAll(pdir, 0o755)
	veryOld := time.Now().Add(-2 * stalePartial)
	recent := time.Now().Add(-2 * staleIngest)
	plant := func(p string, mtime time.Time) {
		t.Helper()
		testregistry.WriteFile(t, p, []byte("partial"))
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	hold := func(p string) {
		t.Helper()
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
			t.Fatal(err)
		}
	}
	hexOf := func(s string) string { return digest.FromString(s).Encoded() }
	partial := func(name string, mtime time.Time, record bool) string {
		p := filepath.Join(pdir, hexOf(name))
		plant(p, mtime)
		if record {
			plant(p+".json", mtime)
		}
		return p
	}
	staleP := partial("stale", veryOld, true)
	heldOldP := partial("held", veryOld, true)
	hold(heldOldP)
	resumable := partial("resumable", recent, true)
	noRecord := partial("no record", recent, false)
	orphan := filepath.Join(pdir, hexOf("orphan")+".json")
	plant(orphan, recent)
	deadTemp := filepath.Join(dir, "blobs", filepath.Base(fsutil.TempName(ingestName)))
	plant(deadTemp, recent)
	heldTemp := filepath.Join(dir, "blobs", filepath.Base(fsutil.TempName(ingestName)))
	plant(heldTemp, veryOld)
	hold(heldTemp)
	legacy := filepath.Join(dir, "blobs", legacyIngestPrefix+"0123")
	plant(legacy, recent)

	if n := s.cleanStale(staleIngest); n != 5 {
		t.Errorf("cleanStale removed %d, want 5", n)
	}
	for p, keep := range map[string]bool{
		staleP: false, staleP + ".json": false, heldOldP: true, heldOldP + ".json": true,
		resumable: true, resumable + ".json": true, noRecord: false, orphan: false,
		deadTemp: false, heldTemp: true, legacy: false,
	} {
		if _, err := os.Stat(p); (err == nil) != keep {
			t.Errorf("%s: kept %v, want %v", strings.TrimPrefix(p, dir), err == nil, keep)
		}
	}
}

// TestPartialSymlinks: a partial dir symlinked out of the cache, or onto
// blobs/sha256 (where partial bytes would sit under a blob's name), and a
// partial that is a symlink to a cached blob: the create succeeds without
// writing outside the cache or into another blob.
func TestPartialSymlinks(t *testing.T) {
	b := newBigImage(t, 2<<20)
	for _, tc := range []string{"partial dir out of the cache", "partial dir onto blobs", "partial onto a blob"} {
		t.Run(tc, func(t *testing.T) {
			dir := t.TempDir()
			cache := filepath.Join(dir, "cache")
			outside := filepath.Join(dir, "outside")
			os.MkdirAll(outside, 0o755)
			os.MkdirAll(filepath.Join(cache, "blobs", "sha256"), 0o755)
			os.MkdirAll(filepath.Join(cache, "partial"), 0o755)
			victim := filepath.Join(cache, "blobs", "sha256", digest.FromString("victim").Encoded())
			testregistry.WriteFile(t, victim, []byte("victim"))
			link := filepath.Join(cache, filepath.FromSlash(dirPartial))
			switch tc {
			case "partial dir out of the cache":
				os.Symlink(outside, link)
			case "partial dir onto blobs":
				os.Symlink("../blobs/sha256", link)
			case "partial onto a blob":
				os.MkdirAll(link, 0o755)
				p := filepath.Join(link, b.layer.Digest.Encoded())
				os.Symlink("../../blobs/sha256/"+filepath.Base(victim), p)
				raw, _ := json.Marshal(partialMeta{Digest: b.layer.Digest, Size: b.layer.Size, Source: b.source})
				testregistry.WriteFile(t, p+".json", raw)
			}
			createIn(t, dir, "b", writeSpec(t, dir, imagesSpec(b.ref)), CreateOptions{CacheDir: cache})
			if ents, _ := os.ReadDir(outside); len(ents) != 0 {
				t.Errorf("%d files written outside the cache", len(ents))
			}
			if got, _ := os.ReadFile(victim); string(got) != "victim" {
				t.Errorf("a cached blob was written through a partial: %q…", got[:min(len(got), 16)])
			}
			cacheBlobsExcept(t, cache, victim)
		})
	}
}

// cacheBlobsExcept checks every cache entry but one planted file.
func cacheBlobsExcept(t *testing.T, cache, planted string) {
	t.Helper()
	b, _ := os.ReadFile(planted)
	os.Remove(planted)
	cacheBlobs(t, cache)
	testregistry.WriteFile(t, planted, b)
}

// TestPartialHeldByAnotherCreate: a partial another create is writing
// (its flock held) is neither read nor written; this create fetches the
// blob whole without it.
func TestPartialHeldByAnotherCreate(t *testing.T) {
	b := newBigImage(t, 2<<20)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	p := plantPartial(t, cache, partialMeta{Digest: b.layer.Digest, Size: b.layer.Size, Source: b.source}, b.bytes[:1<<20])
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	res := createIn(t, dir, "b", writeSpec(t, dir, imagesSpec(b.ref)), CreateOptions{CacheDir: cache})
	if gets := b.layerGets(); len(gets) != 1 || gets[0].Range != "" || gets[0].Bytes != b.layer.Size || res.Fetch.ResumedBlobs != 0 {
		t.Fatalf("layer GETs %+v (fetch %+v), want one of the whole blob", gets, res.Fetch)
	}
	if fi, err := os.Stat(p); err != nil || fi.Size() != 1<<20 {
		t.Errorf("the held partial was changed: %v, %v", fi, err)
	}
	cacheBlobs(t, cache)
}

// FuzzContentRange: a registry's Content-Range header is accepted only
// when it says exactly the range asked for.
func FuzzContentRange(f *testing.F) {
	f.Add("bytes 100-199/200", int64(100), int64(200))
	f.Add("bytes 100-199/*", int64(100), int64(200))
	f.Add("bytes 0-199/200", int64(100), int64(200))
	f.Add("bytes 100-199/201", int64(100), int64(200))
	f.Add("bytes +100-199/200", int64(100), int64(200))
	f.Fuzz(func(t *testing.T, h string, offset, size int64) {
		if !contentRangeIs(h, offset, size) {
			return
		}
		exact := fmt.Sprintf("bytes %d-%d/%d", offset, size-1, size)
		open := fmt.Sprintf("bytes %d-%d/*", offset, size-1)
		if h != exact && h != open {
			t.Fatalf("accepted %q for bytes %d-%d of %d", h, offset, size-1, size)
		}
	})
}
