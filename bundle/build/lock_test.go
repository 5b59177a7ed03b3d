package build

import (
	"errors"
	"strings"
	"testing"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
)

// TestCheckLockNames: images match their lock entries by normalized name
// (a lock from before names were normalized still pins them), and an image
// the lock lacks names the versions of its repository the lock has (#13).
func TestCheckLockNames(t *testing.T) {
	img := func(name, d string) manifests.LockItem {
		return manifests.LockItem{Kind: manifests.KindImage, Name: name, Digest: d}
	}
	old := &manifests.Lock{Items: []manifests.LockItem{img("docker.io/library/busybox", "sha256:1"), img("docker.io/library/nginx:1.25", "sha256:2")}}
	same := &manifests.Lock{Items: []manifests.LockItem{img("docker.io/library/busybox:latest", "sha256:1"), img("docker.io/library/nginx:1.25", "sha256:2")}}
	if err := checkLock(old, same); err != nil {
		t.Fatalf("a lock with the tagless name: %v", err)
	}
	moved := &manifests.Lock{Items: []manifests.LockItem{img("docker.io/library/busybox:latest", "sha256:1"), img("docker.io/library/nginx:1.26", "sha256:3")}}
	err := checkLock(old, moved)
	want := `image "docker.io/library/nginx:1.26" is not in the lock file (the lock has docker.io/library/nginx:1.25; run without --lock to update it)`
	if !errors.Is(err, bundle.ErrLockMismatch) || !strings.Contains(err.Error(), want) {
		t.Fatalf("checkLock: %v\nwant %q", err, want)
	}
}
