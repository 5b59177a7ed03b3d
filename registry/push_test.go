package registry

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"
)

func writeHtpasswd(t testing.TB, user, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(p, []byte(user+":"+string(h)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPushNeedsCredentials: anonymous clients only read; htpasswd users
// push (blobs, manifests, subjects), discover and delete.
func TestPushNeedsCredentials(t *testing.T) {
	store, _ := testStore(t)
	srv, _ := serveStore(t, store, writeHtpasswd(t, "zdt", "s3cret"))
	host := strings.TrimPrefix(srv.URL, "http://")
	auth := func(user, pass string) map[string]string {
		req, _ := http.NewRequest("GET", "/", nil)
		req.SetBasicAuth(user, pass)
		return map[string]string{"Authorization": req.Header.Get("Authorization")}
	}
	good, bad := auth("zdt", "s3cret"), auth("zdt", "wrong")

	for _, c := range []struct {
		name, method, path string
		hdr                map[string]string
		status             int
	}{
		{"anonymous base", "GET", "/v2/", nil, 200},
		{"authenticated base", "GET", "/v2/", good, 200},
		{"bad credentials on base", "GET", "/v2/", bad, 401},
		{"anonymous upload", "POST", "/v2/push/img/blobs/uploads/", nil, 401},
		{"bad credentials upload", "POST", "/v2/push/img/blobs/uploads/", bad, 401},
		{"anonymous manifest put", "PUT", "/v2/push/img/manifests/1", nil, 401},
		{"anonymous delete", "DELETE", "/v2/push/img/manifests/sha256:" + strings.Repeat("a", 64), nil, 401},
		{"authenticated upload", "POST", "/v2/push/img/blobs/uploads/", good, 202},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := do(t, c.method, srv.URL+c.path, c.hdr, nil)
			if r.status != c.status {
				t.Fatalf("%s %s = %d, want %d: %s", c.method, c.path, r.status, c.status, r.body)
			}
			if r.status == 401 && !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic ") {
				t.Fatalf("401 without a Basic challenge: %v", r.header)
			}
		})
	}

	// A real client pushes with credentials and anyone pulls.
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host+"/push/img:1", name.Insecure)
	if err := remote.Write(ref, img); err == nil {
		t.Fatal("anonymous push succeeded")
	}
	if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "zdt", Password: "s3cret"})); err != nil {
		t.Fatalf("push with credentials: %v", err)
	}
	pulled, err := remote.Image(ref)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if got, _ := pulled.Digest(); got != want {
		t.Fatalf("pulled %s, pushed %s", got, want)
	}
	rawImg, _ := img.RawManifest()
	mt, _ := img.MediaType()

	// Monolithic blob upload, then a manifest whose subject is the image:
	// the registry says it processed the subject and lists the referrer.
	payload := []byte(`{"sbom":"test"}`)
	pd := digestOf(payload)
	uploadBlob(t, srv.URL, "push/img", good, payload)
	empty := []byte("{}")
	uploadBlob(t, srv.URL, "push/img", good, empty)
	m := ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
		ArtifactType: "application/vnd.test.sbom",
		Config:       ocispec.Descriptor{MediaType: ocispec.MediaTypeEmptyJSON, Digest: digestOf(empty), Size: 2},
		Layers:       []ocispec.Descriptor{{MediaType: "application/json", Digest: pd, Size: int64(len(payload))}},
		Subject:      &ocispec.Descriptor{MediaType: string(mt), Digest: digestOf(rawImg), Size: int64(len(rawImg))}}
	mb, _ := json.Marshal(m)
	put := do(t, "PUT", srv.URL+"/v2/push/img/manifests/"+digestOf(mb).String(), merge(good, map[string]string{"Content-Type": ocispec.MediaTypeImageManifest}), bytes.NewReader(mb))
	if put.status != 201 || put.header.Get("OCI-Subject") != digestOf(rawImg).String() {
		t.Fatalf("manifest with subject: %d OCI-Subject %q: %s", put.status, put.header.Get("OCI-Subject"), put.body)
	}
	refs := do(t, "GET", srv.URL+"/v2/push/img/referrers/"+digestOf(rawImg).String(), nil, nil)
	var idx ocispec.Index
	if err := json.Unmarshal(refs.body, &idx); err != nil || len(idx.Manifests) != 1 || idx.Manifests[0].Digest != digestOf(mb) || idx.Manifests[0].ArtifactType != "application/vnd.test.sbom" {
		t.Fatalf("referrers after push: %s", refs.body)
	}

	// Management: delete the referrer and the image's tag by digest.
	if r := do(t, "DELETE", srv.URL+"/v2/push/img/manifests/"+digestOf(mb).String(), good, nil); r.status != 202 {
		t.Fatalf("delete manifest: %d %s", r.status, r.body)
	}
	if r := do(t, "GET", srv.URL+"/v2/push/img/manifests/"+digestOf(mb).String(), nil, nil); r.status != 404 {
		t.Fatalf("deleted manifest still served: %d", r.status)
	}
	if r := do(t, "DELETE", srv.URL+"/v2/push/img/blobs/"+pd.String(), good, nil); r.status != 202 {
		t.Fatalf("delete blob: %d %s", r.status, r.body)
	}
	if r := do(t, "HEAD", srv.URL+"/v2/push/img/blobs/"+pd.String(), nil, nil); r.status != 404 {
		t.Fatalf("deleted blob still served: %d", r.status)
	}
}

func merge(a, b map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// uploadBlob pushes a blob with POST then PUT (monolithic upload in two
// steps; a POST with ?digest= alone MAY be refused with 202 by the spec).
func uploadBlob(t testing.TB, base, repo string, hdr map[string]string, data []byte) {
	t.Helper()
	start := do(t, "POST", base+"/v2/"+repo+"/blobs/uploads/", hdr, nil)
	loc := start.header.Get("Location")
	if start.status != 202 || loc == "" {
		t.Fatalf("starting upload: %d %s", start.status, start.body)
	}
	if strings.HasPrefix(loc, "/") {
		loc = base + loc
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	d := digestOf(data)
	put := do(t, "PUT", loc+sep+"digest="+d.String(), merge(hdr, map[string]string{"Content-Type": "application/octet-stream"}), bytes.NewReader(data))
	if put.status != 201 || put.header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("finishing upload: %d %s", put.status, put.body)
	}
	if h := do(t, "HEAD", base+"/v2/"+repo+"/blobs/"+d.String(), nil, nil); h.status != 200 {
		t.Fatalf("uploaded blob not there: %d", h.status)
	}
}
