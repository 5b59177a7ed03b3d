package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const acceptAll = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

type resp struct {
	status int
	header http.Header
	body   []byte
}

func do(t testing.TB, method, url string, hdr map[string]string, body io.Reader) resp {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	r, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	b, err := io.ReadAll(r.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp{r.StatusCode, r.Header, b}
}

// errorCode is the first OCI error code of a response body.
func errorCode(b []byte) string {
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if json.Unmarshal(b, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

// servers returns the same bundle served both ways: straight from the
// archive and from a store Import filled.
func servers(t *testing.T, tb *testBundle) map[string]*httptest.Server {
	bsrv, _ := serveArchives(t, tb.archive)
	store, _ := testStore(t)
	if _, err := store.Import(context.Background(), tb.archive, ImportOptions{CopyBlobs: true}); err != nil {
		t.Fatal(err)
	}
	ssrv, _ := serveStore(t, store, "")
	return map[string]*httptest.Server{"bundle": bsrv, "store": ssrv}
}

// TestPullConformance follows the OCI distribution spec v1.1 pull and
// content discovery workflows against what `zdt serve` offers.
func TestPullConformance(t *testing.T) {
	tb := buildBundle(t, bundleSpec{})
	ps, err := Placements(context.Background(), tb.archive)
	if err != nil {
		t.Fatal(err)
	}
	web := findPlacement(t, ps, "library/web", "1.0")
	chart := findPlacement(t, ps, "charts/demo", "1.2.3")
	root := tb.res.Root
	// A layer of the amd64 image, for blob and range checks.
	var idx ocispec.Index
	b, err := tb.archive.ReadSmall(context.Background(), ocispec.Descriptor{Digest: web.Digest, Size: mustSize(t, tb, web.Digest)})
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	var img ocispec.Manifest
	mb, err := tb.archive.ReadSmall(context.Background(), idx.Manifests[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(mb, &img); err != nil {
		t.Fatal(err)
	}
	layer := img.Layers[len(img.Layers)-1]
	lr, _ := tb.archive.BlobReader(layer.Digest)
	layerBytes, _ := io.ReadAll(lr)

	for mode, srv := range servers(t, tb) {
		u := srv.URL
		t.Run(mode, func(t *testing.T) {
			t.Run("base", func(t *testing.T) {
				r := do(t, "GET", u+"/v2/", nil, nil)
				if r.status != 200 {
					t.Fatalf("GET /v2/ = %d", r.status)
				}
			})
			manifestCases := []struct {
				name, path string
				wantType   string
				wantDigest digest.Digest
			}{
				{"index by tag", "/v2/library/web/manifests/1.0", ocispec.MediaTypeImageIndex, web.Digest},
				{"index by tag, docker.io path", "/v2/docker.io/library/web/manifests/1.0", ocispec.MediaTypeImageIndex, web.Digest},
				{"index by digest", "/v2/library/web/manifests/" + web.Digest.String(), ocispec.MediaTypeImageIndex, web.Digest},
				{"platform manifest by digest", "/v2/library/web/manifests/" + idx.Manifests[0].Digest.String(), ocispec.MediaTypeImageManifest, idx.Manifests[0].Digest},
				{"other registry", "/v2/quay.io/zdt/tools/manifests/2.0", ocispec.MediaTypeImageManifest, findPlacement(t, ps, "quay.io/zdt/tools", "2.0").Digest},
				{"chart", "/v2/charts/demo/manifests/1.2.3", ocispec.MediaTypeImageManifest, chart.Digest},
				{"file", "/v2/files/tool/manifests/1.0.0", ocispec.MediaTypeImageManifest, findPlacement(t, ps, "files/tool", "1.0.0").Digest},
				{"ami", "/v2/amis/node-image/manifests/1.0.0", ocispec.MediaTypeImageManifest, findPlacement(t, ps, "amis/node-image", "1.0.0").Digest},
				{"bundle root", "/v2/zdt/test/manifests/1.0.0", ocispec.MediaTypeImageIndex, root.Digest},
				{"cosign signature tag", "/v2/zdt/test/manifests/" + strings.ReplaceAll(root.Digest.String(), ":", "-") + ".sig", ocispec.MediaTypeImageManifest, tb.sig.Digest},
				{"attestation by digest", "/v2/zdt/test/manifests/" + tb.att.Digest.String(), ocispec.MediaTypeImageManifest, tb.att.Digest},
				{"containerd mirror query", "/v2/library/web/manifests/1.0?ns=docker.io", ocispec.MediaTypeImageIndex, web.Digest},
			}
			for _, c := range manifestCases {
				t.Run("manifest/"+c.name, func(t *testing.T) {
					for _, accept := range []string{acceptAll, ""} {
						h := map[string]string{}
						if accept != "" {
							h["Accept"] = accept
						}
						head := do(t, "HEAD", u+c.path, h, nil)
						get := do(t, "GET", u+c.path, h, nil)
						for _, r := range []resp{head, get} {
							if r.status != 200 {
								t.Fatalf("accept %q: status %d: %s", accept, r.status, r.body)
							}
							if ct := r.header.Get("Content-Type"); ct != c.wantType {
								t.Errorf("Content-Type %q, want %q", ct, c.wantType)
							}
							if dg := r.header.Get("Docker-Content-Digest"); dg != c.wantDigest.String() {
								t.Errorf("Docker-Content-Digest %q, want %s", dg, c.wantDigest)
							}
						}
						if digestOf(get.body) != c.wantDigest {
							t.Errorf("body hashes to %s, want %s", digestOf(get.body), c.wantDigest)
						}
						if len(head.body) != 0 || head.header.Get("Content-Length") != fmt.Sprint(len(get.body)) {
							t.Errorf("HEAD: body %d bytes, Content-Length %q, GET body %d", len(head.body), head.header.Get("Content-Length"), len(get.body))
						}
					}
				})
			}
			errCases := []struct {
				name, method, path string
				status             int
				code               string
			}{
				{"unknown tag", "GET", "/v2/library/web/manifests/nope", 404, "MANIFEST_UNKNOWN"},
				{"unknown manifest digest", "GET", "/v2/library/web/manifests/sha256:" + strings.Repeat("0", 64), 404, "MANIFEST_UNKNOWN"},
				{"unknown repository", "GET", "/v2/library/nope/manifests/1.0", 404, ""},
				{"unknown blob", "GET", "/v2/library/web/blobs/sha256:" + strings.Repeat("1", 64), 404, "BLOB_UNKNOWN"},
				{"blob of another repository", "GET", "/v2/charts/demo/blobs/" + layer.Digest.String(), 404, "BLOB_UNKNOWN"},
				{"invalid digest", "GET", "/v2/library/web/blobs/sha256:xyz", 400, "DIGEST_INVALID"},
				{"unknown repository tags", "GET", "/v2/library/nope/tags/list", 404, "NAME_UNKNOWN"},
				{"push refused", "POST", "/v2/library/web/blobs/uploads/", 405, "UNSUPPORTED"},
				{"manifest put refused", "PUT", "/v2/library/web/manifests/x", 405, "UNSUPPORTED"},
				{"delete refused", "DELETE", "/v2/library/web/manifests/" + web.Digest.String(), 405, "UNSUPPORTED"},
			}
			for _, c := range errCases {
				t.Run("error/"+c.name, func(t *testing.T) {
					r := do(t, c.method, u+c.path, map[string]string{"Accept": acceptAll}, nil)
					if r.status != c.status {
						t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
					}
					if c.code != "" && errorCode(r.body) != c.code {
						t.Fatalf("error code %q, want %q: %s", errorCode(r.body), c.code, r.body)
					}
					if c.code == "" && errorCode(r.body) == "" {
						t.Fatalf("no OCI error body: %s", r.body)
					}
				})
			}
			t.Run("blob", func(t *testing.T) {
				p := u + "/v2/library/web/blobs/" + layer.Digest.String()
				head := do(t, "HEAD", p, nil, nil)
				if head.status != 200 || head.header.Get("Content-Length") != fmt.Sprint(layer.Size) || head.header.Get("Docker-Content-Digest") != layer.Digest.String() {
					t.Fatalf("HEAD blob: %d %v", head.status, head.header)
				}
				get := do(t, "GET", p, nil, nil)
				if get.status != 200 || digestOf(get.body) != layer.Digest {
					t.Fatalf("GET blob: %d, %d bytes hashing to %s", get.status, len(get.body), digestOf(get.body))
				}
				rng := do(t, "GET", p, map[string]string{"Range": "bytes=100-4195"}, nil)
				if rng.status != 206 || string(rng.body) != string(layerBytes[100:4196]) {
					t.Fatalf("range: %d, %d bytes", rng.status, len(rng.body))
				}
				if cr := rng.header.Get("Content-Range"); cr != fmt.Sprintf("bytes 100-4195/%d", layer.Size) {
					t.Fatalf("Content-Range %q", cr)
				}
				bad := do(t, "GET", p, map[string]string{"Range": fmt.Sprintf("bytes=%d-", layer.Size+10)}, nil)
				if bad.status != 416 {
					t.Fatalf("unsatisfiable range: %d", bad.status)
				}
				// Config blobs are blobs of the repository too.
				cfg := do(t, "GET", u+"/v2/library/web/blobs/"+img.Config.Digest.String(), nil, nil)
				if cfg.status != 200 || digestOf(cfg.body) != img.Config.Digest {
					t.Fatalf("config blob: %d", cfg.status)
				}
			})
			t.Run("tags/pagination", func(t *testing.T) {
				all := do(t, "GET", u+"/v2/zdt/test/tags/list", nil, nil)
				var tl struct {
					Name string   `json:"name"`
					Tags []string `json:"tags"`
				}
				if err := json.Unmarshal(all.body, &tl); err != nil || all.status != 200 {
					t.Fatalf("tags: %d %s", all.status, all.body)
				}
				if tl.Name != "zdt/test" || len(tl.Tags) != 2 || tl.Tags[0] != "1.0.0" {
					t.Fatalf("tags = %+v, want 1.0.0 and the signature tag", tl)
				}
				first := do(t, "GET", u+"/v2/zdt/test/tags/list?n=1", nil, nil)
				var p1 struct{ Tags []string }
				json.Unmarshal(first.body, &p1)
				if len(p1.Tags) != 1 || p1.Tags[0] != tl.Tags[0] || !strings.Contains(first.header.Get("Link"), "rel=\"next\"") {
					t.Fatalf("n=1: %v, Link %q", p1.Tags, first.header.Get("Link"))
				}
				next := do(t, "GET", u+"/v2/zdt/test/tags/list?n=1&last="+p1.Tags[0], nil, nil)
				var p2 struct{ Tags []string }
				json.Unmarshal(next.body, &p2)
				if len(p2.Tags) != 1 || p2.Tags[0] != tl.Tags[1] {
					t.Fatalf("n=1&last=%s: %v", p1.Tags[0], p2.Tags)
				}
				zero := do(t, "GET", u+"/v2/zdt/test/tags/list?n=0", nil, nil)
				var p0 struct{ Tags []string }
				json.Unmarshal(zero.body, &p0)
				if zero.status != 200 || len(p0.Tags) != 0 {
					t.Fatalf("n=0: %d %s", zero.status, zero.body)
				}
			})
			t.Run("referrers", func(t *testing.T) {
				p := u + "/v2/zdt/test/referrers/" + root.Digest.String()
				r := do(t, "GET", p, nil, nil)
				if r.status != 200 || r.header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
					t.Fatalf("referrers: %d %q %s", r.status, r.header.Get("Content-Type"), r.body)
				}
				var got ocispec.Index
				if err := json.Unmarshal(r.body, &got); err != nil {
					t.Fatal(err)
				}
				if len(got.Manifests) != 1 || got.Manifests[0].Digest != tb.att.Digest || got.Manifests[0].ArtifactType != tb.att.ArtifactType || got.Manifests[0].Size != tb.att.Size {
					t.Fatalf("referrers = %+v, want the attestation %s", got.Manifests, tb.att.Digest)
				}
				f := do(t, "GET", p+"?artifactType=application/x-none", nil, nil)
				var none ocispec.Index
				json.Unmarshal(f.body, &none)
				if f.status != 200 || len(none.Manifests) != 0 || f.header.Get("OCI-Filters-Applied") != "artifactType" {
					t.Fatalf("filtered: %d %v %s", f.status, f.header, f.body)
				}
				keep := do(t, "GET", p+"?artifactType="+url.QueryEscape(tb.att.ArtifactType), nil, nil)
				var one ocispec.Index
				json.Unmarshal(keep.body, &one)
				if len(one.Manifests) != 1 {
					t.Fatalf("filter on the attestation's type: %s", keep.body)
				}
				empty := do(t, "GET", u+"/v2/library/web/referrers/"+web.Digest.String(), nil, nil)
				var e ocispec.Index
				if json.Unmarshal(empty.body, &e); empty.status != 200 || e.Manifests == nil || len(e.Manifests) != 0 {
					t.Fatalf("no referrers: %d %s", empty.status, empty.body)
				}
				if bad := do(t, "GET", u+"/v2/zdt/test/referrers/sha256:nothex", nil, nil); bad.status != 400 {
					t.Fatalf("invalid digest: %d", bad.status)
				}
			})
			t.Run("catalog", func(t *testing.T) {
				r := do(t, "GET", u+"/v2/_catalog", nil, nil)
				var c struct{ Repositories []string }
				json.Unmarshal(r.body, &c)
				want := []string{"amis/node-image", "charts/demo", "docker.io/library/web", "files/tool", "library/web", "quay.io/zdt/tools", "zdt/test"}
				if r.status != 200 || strings.Join(c.Repositories, " ") != strings.Join(want, " ") {
					t.Fatalf("catalog %d: %v, want %v", r.status, c.Repositories, want)
				}
			})
			t.Run("healthz and metrics", func(t *testing.T) {
				if r := do(t, "GET", u+"/healthz", nil, nil); r.status != 200 || string(r.body) != "ok\n" {
					t.Fatalf("healthz: %d %q", r.status, r.body)
				}
				r := do(t, "GET", u+"/metrics", nil, nil)
				if r.status != 200 || !strings.Contains(string(r.body), `zdt_registry_http_requests_total{code="200",method="GET",route="manifest"}`) {
					t.Fatalf("metrics: %d\n%s", r.status, r.body)
				}
			})
		})
	}
}

func mustSize(t testing.TB, tb *testBundle, d digest.Digest) int64 {
	t.Helper()
	s, ok := tb.archive.BlobSize(d)
	if !ok {
		t.Fatalf("no blob %s", d)
	}
	return s
}
