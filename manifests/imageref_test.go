package manifests

import "testing"

// TestNormalizeImageRef: one name per image, with go-containerregistry's
// defaults (docker.io, library/, latest), whatever the spelling (#13).
func TestNormalizeImageRef(t *testing.T) {
	const d = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	for _, tc := range []struct{ in, want, repo string }{
		{"busybox", "docker.io/library/busybox:latest", "docker.io/library/busybox"},
		{"docker.io/busybox", "docker.io/library/busybox:latest", "docker.io/library/busybox"},
		{"index.docker.io/library/busybox", "docker.io/library/busybox:latest", "docker.io/library/busybox"},
		{"docker.io/library/busybox:latest", "docker.io/library/busybox:latest", "docker.io/library/busybox"},
		{"bitnami/nginx:1.25", "docker.io/bitnami/nginx:1.25", "docker.io/bitnami/nginx"},
		{"127.0.0.1:5000/platform/app", "127.0.0.1:5000/platform/app:latest", "127.0.0.1:5000/platform/app"},
		{"localhost/app", "localhost/app:latest", "localhost/app"},
		{"quay.io/a/b@" + d, "quay.io/a/b@" + d, "quay.io/a/b"},
		{"nginx:1.25@" + d, "docker.io/library/nginx:1.25@" + d, "docker.io/library/nginx"},
	} {
		got, err := NormalizeImageRef(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("NormalizeImageRef(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
		if r := ImageRepository(got); r != tc.repo {
			t.Errorf("ImageRepository(%q) = %q, want %q", got, r, tc.repo)
		}
	}
	for _, bad := range []string{"", "UPPER/case", "a b", "nginx:", "nginx@sha256:12"} {
		if got, err := NormalizeImageRef(bad); err == nil {
			t.Errorf("NormalizeImageRef(%q) = %q, want an error", bad, got)
		}
	}
}

// TestLockFindImage: a lock written before references were normalized
// (docker.io/library/busybox) pins the spec's busybox.
func TestLockFindImage(t *testing.T) {
	l := &Lock{Items: []LockItem{{Kind: KindImage, Name: "docker.io/library/busybox", Digest: "sha256:1"}, {Kind: KindFile, Name: "busybox"}}}
	for _, ref := range []string{"busybox", "docker.io/library/busybox:latest", "docker.io/library/busybox"} {
		if it, ok := l.FindImage(ref); !ok || it.Digest != "sha256:1" {
			t.Errorf("FindImage(%q) = %+v, %v", ref, it, ok)
		}
	}
	if it, ok := l.FindImage("busybox:1"); ok {
		t.Errorf("FindImage(busybox:1) = %+v", it)
	}
}
