package build

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"zdt.dev/zdt/internal/testregistry"
	"zdt.dev/zdt/manifests"
)

// TestResumeHelper is the create that TestResumeAfterKill kills; it runs
// only in the subprocess.
func TestResumeHelper(t *testing.T) {
	spec := os.Getenv("ZDT_RESUME_SPEC")
	if spec == "" {
		t.Skip("subprocess of TestResumeAfterKill")
	}
	s, err := manifests.Load(spec)
	if err != nil {
		t.Fatal(err)
	}
	_, err = Create(context.Background(), s, CreateOptions{
		Output: os.Getenv("ZDT_RESUME_OUT"), CacheDir: os.Getenv("ZDT_RESUME_CACHE"), Concurrency: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestResumeAfterKill kills a create (SIGKILL) while it fetches from a slow
// registry, then creates again with the same cache: the blobs the killed
// create finished are not fetched again, the cache holds no corrupt entry
// and the result verifies.
func TestResumeAfterKill(t *testing.T) {
	slow := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
				select {
				case <-time.After(150 * time.Millisecond):
				case <-r.Context().Done():
					return
				}
			}
			h.ServeHTTP(w, r)
		})
	}
	reg := testregistry.New(t, testregistry.Options{Middleware: slow})
	var refs []string
	for i := range 8 {
		name := fmt.Sprintf("app/svc%d:1", i)
		reg.PushIndex(t, testregistry.Auth{}, name, testregistry.RandomIndex(t, []string{"linux/amd64"}, nil, 2, 16<<10))
		refs = append(refs, reg.Ref(name))
	}
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	spec := writeSpec(t, dir, imagesSpec(refs...))
	out := filepath.Join(dir, "out", "b.zdt")
	os.MkdirAll(filepath.Dir(out), 0o755)

	cmd := exec.Command(os.Args[0], "-test.run=^TestResumeHelper$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ZDT_RESUME_SPEC="+spec.File, "ZDT_RESUME_OUT="+out, "ZDT_RESUME_CACHE="+cache)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// 8 images × 3 blobs at 150 ms each, two at a time: about 1.8 s. Kill
	// once a third of the blobs are in.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ents, _ := os.ReadDir(filepath.Join(cache, "blobs", "sha256"))
		if len(ents) >= 8 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatal("the create did not get going")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := cmd.Wait()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("the create was not killed mid-way (err %v): make the registry slower", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a killed create left an archive")
	}
	done := cacheBlobs(t, cache) // also checks every entry's bytes
	if len(done) >= 24 {
		t.Fatalf("the create had finished all %d blobs before the kill", len(done))
	}

	reg.Reset()
	res := createIn(t, dir, "resumed", spec, CreateOptions{CacheDir: cache})
	gets := reg.BlobGets()
	for _, d := range done {
		if gets[d] > 0 {
			t.Errorf("blob %s was finished before the kill but fetched again", d)
		}
	}
	if len(gets) == 0 || res.Fetch.FetchedBlobs != len(gets) {
		t.Fatalf("resumed create fetched %d blobs (says %d)", len(gets), res.Fetch.FetchedBlobs)
	}
	t.Logf("killed after %d blobs; the resumed create fetched the other %d", len(done), len(gets))
	cacheBlobs(t, cache)
}
