package registry

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"
)

// pullSet is what one client pulls: every manifest and blob of the image
// placements, as URLs with their digests.
type pullItem struct {
	url    string
	digest digest.Digest
	blob   bool
}

func pullSet(base string, ps []Placement) []pullItem {
	var items []pullItem
	seen := map[string]bool{}
	for _, p := range ps {
		if p.Kind != "image" || strings.HasPrefix(p.Repository, "docker.io/") {
			continue
		}
		for _, d := range p.Manifests {
			u := base + "/v2/" + p.Repository + "/manifests/" + d.String()
			if !seen[u] {
				seen[u] = true
				items = append(items, pullItem{u, d, false})
			}
		}
		for _, d := range p.Blobs {
			u := base + "/v2/" + p.Repository + "/blobs/" + d.String()
			if !seen[u] {
				seen[u] = true
				items = append(items, pullItem{u, d, true})
			}
		}
	}
	return items
}

// pull fetches every item once; with verify it hashes what it got.
func pull(ctx context.Context, client *http.Client, items []pullItem, verify bool, buf []byte) (int64, error) {
	var n int64
	for _, it := range items {
		req, _ := http.NewRequestWithContext(ctx, "GET", it.url, nil)
		req.Header.Set("Accept", acceptAll)
		resp, err := client.Do(req)
		if err != nil {
			return n, err
		}
		var w io.Writer = io.Discard
		h := sha256.New()
		if verify {
			w = h
		}
		m, err := io.CopyBuffer(w, resp.Body, buf)
		resp.Body.Close()
		n += m
		if err != nil {
			return n, fmt.Errorf("%s: %w", it.url, err)
		}
		if resp.StatusCode != 200 {
			return n, fmt.Errorf("%s: status %d", it.url, resp.StatusCode)
		}
		if verify && digest.NewDigest(digest.SHA256, h) != it.digest {
			return n, fmt.Errorf("%s: content does not match its digest", it.url)
		}
	}
	return n, nil
}

// concurrentPull runs clients that each pull the whole set.
func concurrentPull(ctx context.Context, clients int, items []pullItem, verify bool) (int64, error) {
	tr := &http.Transport{MaxIdleConnsPerHost: clients, MaxConnsPerHost: 0, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var total atomic.Int64
	eg, ctx := errgroup.WithContext(ctx)
	for i := 0; i < clients; i++ {
		eg.Go(func() error {
			buf := make([]byte, 1<<20)
			n, err := pull(ctx, client, items, verify, buf)
			total.Add(n)
			return err
		})
	}
	err := eg.Wait()
	return total.Load(), err
}

// TestConcurrentPull: 50 clients pull every image of a bundle at once from
// `serve --bundle`, each checking every digest; no errors. (The 500 MiB
// version is BenchmarkConcurrentPull.)
func TestConcurrentPull(t *testing.T) {
	size := int64(512 << 10)
	if testing.Short() {
		size = 64 << 10
	}
	tb := buildBundle(t, bundleSpec{static: true, layerSize: size, layers: 4, noAMI: true})
	srv, h := serveArchives(t, tb.archive)
	items := pullSet(srv.URL, h.Placements)
	start := time.Now()
	n, err := concurrentPull(context.Background(), 50, items, true)
	if err != nil {
		t.Fatal(err)
	}
	var want int64
	for _, it := range items {
		s, _ := tb.archive.BlobSize(it.digest)
		want += s
	}
	if n != 50*want {
		t.Fatalf("pulled %d bytes, want %d", n, 50*want)
	}
	t.Logf("50 clients pulled %d MiB in %s", n>>20, time.Since(start).Round(time.Millisecond))
}

// benchBundle builds a bundle of about mib MiB of image layers.
func benchBundle(b *testing.B, mib int) *testBundle {
	layer := int64(8 << 20)
	layers := max(1, (mib<<20)/int(layer)/2) // two platforms
	return buildBundle(b, bundleSpec{static: true, layerSize: layer, layers: layers, noAMI: true})
}

// BenchmarkConcurrentPull: 50 concurrent clients pull a ~500 MiB image set
// from `serve --bundle`; reports MB/s over all clients.
func BenchmarkConcurrentPull(b *testing.B) {
	tb := benchBundle(b, 500)
	srv, h := serveArchives(b, tb.archive)
	items := pullSet(srv.URL, h.Placements)
	var set int64
	for _, it := range items {
		s, _ := tb.archive.BlobSize(it.digest)
		set += s
	}
	b.SetBytes(50 * set)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := concurrentPull(context.Background(), 50, items, false); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPullThroughput compares pull throughput (8 concurrent clients,
// ~256 MiB image set each) from `zdt serve --bundle` (archive driver),
// `zdt serve --root` (Import's store) and distribution's own
// `registry serve` over that same store. The goal is zdt ≥ 0.9 × registry.
func BenchmarkPullThroughput(b *testing.B) {
	tb := benchBundle(b, 256)
	root := b.TempDir()
	s, err := OpenStore(root, StoreOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	store := s.Dir()
	if _, err := s.Import(context.Background(), tb.archive, ImportOptions{CopyBlobs: true}); err != nil {
		b.Fatal(err)
	}
	ps, err := Placements(context.Background(), tb.archive)
	if err != nil {
		b.Fatal(err)
	}
	var set int64
	items := pullSet("", ps)
	for _, it := range items {
		s, _ := tb.archive.BlobSize(it.digest)
		set += s
	}
	const clients = 8
	bench := func(b *testing.B, base string) {
		its := pullSet(base, ps)
		if _, err := concurrentPull(context.Background(), 1, its, true); err != nil { // warm-up and check
			b.Fatal(err)
		}
		b.SetBytes(clients * set)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := concurrentPull(context.Background(), clients, its, false); err != nil {
				b.Fatal(err)
			}
		}
	}
	// Each server runs in a process of its own, as in production.
	b.Run("zdt-serve-bundle", func(b *testing.B) {
		bench(b, startServeProcess(b, "bundle", tb.path))
	})
	b.Run("zdt-serve-store", func(b *testing.B) {
		bench(b, startServeProcess(b, "store", root))
	})
	b.Run("distribution-registry-serve", func(b *testing.B) {
		bin := needClient(b, "registry")
		base := startDistribution(b, bin, store)
		bench(b, base)
	})
}

// startDistribution runs distribution's `registry serve` over a store.
func startDistribution(t testing.TB, bin, store string) string {
	t.Helper()
	addr := freeAddr(t)
	cfg := filepath.Join(t.TempDir(), "config.yml")
	writeTestFile(t, cfg, []byte(fmt.Sprintf(`version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: %s
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
`, store, addr)))
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", cfg)
	cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	waitUp(t, "http://"+addr)
	return "http://" + addr
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// BenchmarkImport imports a ~256 MiB bundle into an empty store and reports
// the time relative to `openssl dgst -sha256` over the archive (goal ≤ 1.5),
// and the time of a re-import (nothing to write).
func BenchmarkImport(b *testing.B) {
	tb := benchBundle(b, 256)
	var opensslTime time.Duration
	if bin, err := exec.LookPath("openssl"); err == nil {
		start := time.Now()
		if out, err := exec.Command(bin, "dgst", "-sha256", tb.path).CombinedOutput(); err != nil {
			b.Fatalf("openssl: %v %s", err, out)
		}
		opensslTime = time.Since(start)
	}
	// The floor for any durable copy on this disk: copy the archive and
	// fsync it (no hashing).
	floorStart := time.Now()
	if err := durableCopy(tb.path, filepath.Join(b.TempDir(), "copy")); err != nil {
		b.Fatal(err)
	}
	floor := time.Since(floorStart)
	b.SetBytes(tb.archive.Size())
	b.ResetTimer()
	var importTime, reimportTime time.Duration
	for i := 0; i < b.N; i++ {
		s, store := testStore(b)
		defer s.Close()
		start := time.Now()
		res, err := s.Import(context.Background(), tb.archive, ImportOptions{CopyBlobs: true})
		if err != nil {
			b.Fatal(err)
		}
		importTime += time.Since(start)
		if res.BlobsWritten == 0 {
			b.Fatal("nothing imported")
		}
		start = time.Now()
		if res, err = s.Import(context.Background(), tb.archive, ImportOptions{CopyBlobs: true}); err != nil || res.BlobsWritten != 0 {
			b.Fatalf("re-import: %+v %v", res, err)
		}
		reimportTime += time.Since(start)
		b.StopTimer()
		os.RemoveAll(store)
		b.StartTimer()
	}
	b.ReportMetric(float64(reimportTime.Microseconds())/float64(b.N)/1000, "ms-reimport")
	b.ReportMetric(float64(importTime)/float64(b.N)/float64(floor), "x-durable-copy")
	if opensslTime > 0 {
		b.ReportMetric(float64(importTime)/float64(b.N)/float64(opensslTime), "x-openssl")
	}
}

func durableCopy(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	if _, err := io.Copy(out, in); err != nil {
		return err
	}
	return out.Sync()
}
