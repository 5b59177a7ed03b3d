package testregistry

import (
	"context"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"zdt.dev/zdt/internal/fixtures"
)

// Auth is basic auth for Push (empty: anonymous).
type Auth struct{ Username, Password string }

func (r *Registry) remoteOptions(ctx context.Context, a Auth) []remote.Option {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if r.Client.Transport != nil {
		if t, ok := r.Client.Transport.(*http.Transport); ok {
			tr = t.Clone()
		}
	}
	opts := []remote.Option{remote.WithContext(ctx), remote.WithTransport(tr)}
	if a.Username != "" {
		opts = append(opts, remote.WithAuth(&authn.Basic{Username: a.Username, Password: a.Password}))
	}
	return opts
}

func (r *Registry) parse(t testing.TB, repoTag string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(r.Ref(repoTag), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

// PushImage pushes img as repo:tag and returns its digest.
func (r *Registry) PushImage(t testing.TB, a Auth, repoTag string, img v1.Image) v1.Hash {
	t.Helper()
	if err := remote.Write(r.parse(t, repoTag), img, r.remoteOptions(context.Background(), a)...); err != nil {
		t.Fatalf("pushing %s: %v", repoTag, err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// PushIndex pushes idx (and every image in it) as repo:tag and returns its digest.
func (r *Registry) PushIndex(t testing.TB, a Auth, repoTag string, idx v1.ImageIndex) v1.Hash {
	t.Helper()
	if err := remote.WriteIndex(r.parse(t, repoTag), idx, r.remoteOptions(context.Background(), a)...); err != nil {
		t.Fatalf("pushing %s: %v", repoTag, err)
	}
	d, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// RandomLayers makes n random OCI layers of about size bytes each.
func RandomLayers(t testing.TB, n int, size int64) []v1.Layer {
	t.Helper()
	out := make([]v1.Layer, n)
	for i := range out {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = l
	}
	return out
}

// RandomIndex makes a multi-arch OCI index with one image per platform
// ("linux/amd64"…). Each image stacks the shared layers, then unique random
// layers of about size bytes.
func RandomIndex(t testing.TB, platforms []string, shared []v1.Layer, unique int, size int64) v1.ImageIndex {
	t.Helper()
	var imgs []v1.Image
	for _, p := range platforms {
		plat, err := v1.ParsePlatform(p)
		if err != nil {
			t.Fatal(err)
		}
		layers := append(append([]v1.Layer(nil), shared...), RandomLayers(t, unique, size)...)
		img, err := fixtures.Image(*plat, []string{"/bin/true"}, layers...)
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	idx, err := fixtures.Index(imgs...)
	if err != nil {
		t.Fatal(err)
	}
	return idx
}
