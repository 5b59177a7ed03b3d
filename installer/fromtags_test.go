package installer

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/BurntSushi/toml"
	"github.com/google/go-containerregistry/pkg/crane"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/internal/testregistry"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/registry"
	"zdt.dev/zdt/remote"
	"zdt.dev/zdt/signing"
)

// judge is a client that follows a containerd hosts.toml the way
// containerd does (docs/hosts.md): a tag is resolved by the hosts with
// "resolve", in order; manifests and blobs by digest are fetched from the
// hosts with "pull", in order, the next one tried when a host answers 404;
// everything fetched by digest is checked against it.
type judge struct {
	hosts  []string // URLs up to /v2/<repository path base>, in order
	caps   map[string][]string
	client *http.Client
	// fetched records "host digest" of every blob and manifest read.
	fetched []string
}

func newJudge(t *testing.T, hostsTOML []byte, client *http.Client) *judge {
	t.Helper()
	var f hostsFile
	if _, err := toml.Decode(string(hostsTOML), &f); err != nil {
		t.Fatal(err)
	}
	j := &judge{caps: map[string][]string{}, client: client}
	for _, line := range strings.Split(string(hostsTOML), "\n") { // a TOML table is a map: the order is the file's
		if h, ok := strings.CutPrefix(strings.TrimSpace(line), `[host."`); ok {
			u := strings.TrimSuffix(h, `"]`)
			if !f.Host[u].OverridePath {
				u += "/v2"
			}
			j.hosts = append(j.hosts, u)
			j.caps[u] = f.Host[strings.TrimSuffix(h, `"]`)].Capabilities
		}
	}
	return j
}

func (j *judge) get(method, u, accept string) (*http.Response, error) {
	req, err := http.NewRequest(method, u, nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	return j.client.Do(req)
}

const manifestAccept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json"

// resolve resolves repo:tag (repo without the registry) to a digest.
func (j *judge) resolve(repo, tag string) (digest.Digest, string, error) {
	errs := []error{errors.New("no host may resolve")}
	for _, h := range j.hosts {
		if !slices.Contains(j.caps[h], "resolve") {
			continue
		}
		resp, err := j.get(http.MethodHead, h+"/"+repo+"/manifests/"+tag, manifestAccept)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			errs = append(errs, fmt.Errorf("%s: %s", h, resp.Status))
			continue
		}
		return digest.Digest(resp.Header.Get("Docker-Content-Digest")), h, nil
	}
	return "", "", errors.Join(errs...)
}

// fetch reads a manifest or blob by digest from the first host with
// "pull" that has it, and checks it.
func (j *judge) fetch(repo, kind string, d digest.Digest) ([]byte, string, error) {
	for _, h := range j.hosts {
		if !slices.Contains(j.caps[h], "pull") {
			continue
		}
		resp, err := j.get(http.MethodGet, h+"/"+repo+"/"+kind+"/"+d.String(), manifestAccept)
		if err != nil {
			continue // down: the next host
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			continue
		}
		if err != nil || resp.StatusCode != http.StatusOK {
			return nil, h, fmt.Errorf("%s %s: %s %v", kind, d, resp.Status, err)
		}
		if digest.FromBytes(b) != d {
			return nil, h, fmt.Errorf("%s %s: %s served other bytes", kind, d, h)
		}
		j.fetched = append(j.fetched, h+" "+d.String())
		return b, h, nil
	}
	return nil, "", fmt.Errorf("%s %s: no host has it", kind, d)
}

// pull resolves repo:tag and reads everything the image needs (one
// platform manifest or an index of them), returning the resolved digest.
func (j *judge) pull(repo, tag string) (digest.Digest, error) {
	d, _, err := j.resolve(repo, tag)
	if err != nil {
		return "", err
	}
	var walk func(d digest.Digest) error
	walk = func(d digest.Digest) error {
		b, _, err := j.fetch(repo, "manifests", d)
		if err != nil {
			return err
		}
		var m struct {
			Config *struct {
				Digest digest.Digest `json:"digest"`
			} `json:"config"`
			Layers []struct {
				Digest digest.Digest `json:"digest"`
			} `json:"layers"`
			Manifests []struct {
				Digest digest.Digest `json:"digest"`
			} `json:"manifests"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			return err
		}
		for _, c := range m.Manifests {
			if err := walk(c.Digest); err != nil {
				return err
			}
		}
		if m.Config != nil {
			if _, _, err := j.fetch(repo, "blobs", m.Config.Digest); err != nil {
				return err
			}
		}
		for _, l := range m.Layers {
			if _, _, err := j.fetch(repo, "blobs", l.Digest); err != nil {
				return err
			}
		}
		return nil
	}
	return d, walk(d)
}

// TestInstallFromTagsOnlyFromSignedData is the attack on install --from
// of the security review: a source registry (an in-process distribution
// registry over TLS, the bundle pushed under a prefix as `zdt push` does)
// whose tag of an image the bundle carries is re-pointed, after the
// install, to another image (anyone with push rights there can). Through
// the node's own `zdt serve` (the store the install filled: the bundle's
// metadata, or all of it with Replicate) the tag still resolves to the
// signed digest: crane against the node's serve, and a client following
// the generated hosts.toml as containerd does (this node alone resolves;
// the source only serves by digest) pulls the signed image, its layers
// 404 locally (BLOB_UNKNOWN, no partial body) and read from the source by
// digest unless replicated. With the node's serve down, the tag does not
// resolve at all (the source may not resolve it) rather than to the
// attacker's image; digests still come from the source.
func TestInstallFromTagsOnlyFromSignedData(t *testing.T) {
	for _, replicate := range []bool{false, true} {
		t.Run(fmt.Sprintf("replicate=%v", replicate), func(t *testing.T) {
			testTagsOnlyFromSignedData(t, replicate)
		})
	}
}

func testTagsOnlyFromSignedData(t *testing.T, replicate bool) {
	ctx := context.Background()
	dir := t.TempDir()
	p := release{version: "1", images: map[string]int64{"quay.io/a/b:1": 1}, files: map[string][]byte{"/etc/t": []byte("t\n")}}.build(t, dir)
	a, err := bundle.Open(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var signed digest.Digest
	for _, d := range a.RootIndex.Manifests {
		if d.Annotations[manifests.AnnotationRefName] == "quay.io/a/b:1" {
			signed = d.Digest
		}
	}
	if signed == "" {
		t.Fatal("the bundle has no quay.io/a/b:1")
	}

	// The site registry `zdt push` filled.
	src := testregistry.New(t, testregistry.Options{TLS: true})
	remotes := remote.New(&remote.RegistryConfig{Registries: map[string]remote.RegistryHost{src.Host: {CA: src.CAFile}}}, 4)
	if _, err := registry.Push(ctx, a, src.Host+"/site", registry.PushOptions{Remotes: remotes}); err != nil {
		t.Fatal(err)
	}

	// The node's `zdt serve`, at the address its mirror configuration names.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var serve atomic.Pointer[http.Handler]
	node := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := serve.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		http.Error(w, "not serving", http.StatusServiceUnavailable)
	}))
	node.Listener = ln
	node.StartTLS()
	defer node.Close()

	root := filepath.Join(dir, "node")
	opts := FromOptions{Options: Options{Root: root, ToolVersion: "test", ServeAddr: ln.Addr().String()},
		Policy: signing.Policy{InsecureSkipSignature: true}, CA: src.CAFile, Remotes: remotes, Replicate: replicate}
	res, err := InstallFrom(ctx, src.Host+"/site/zdt/plat:1", opts)
	if err != nil || !res.Applied {
		t.Fatalf("InstallFrom: %+v %v", res, err)
	}
	if res, err := InstallFrom(ctx, src.Host+"/site/zdt/plat:1", opts); err != nil || res.Applied {
		t.Fatalf("the same install again changed something: %+v %v", res, err)
	}
	store, err := registry.OpenStore(root, registry.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h, err := registry.NewHandler(ctx, registry.HandlerOptions{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	var hh http.Handler = h
	serve.Store(&hh)

	// The attack: the tag at the source now names another image.
	evil, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	evilDigest := src.PushImage(t, testregistry.Auth{}, "site/quay.io/a/b:1", evil)
	if digest.Digest(evilDigest.String()) == signed {
		t.Fatal("the attacker's image is the signed one")
	}

	pool := x509.NewCertPool()
	pool.AddCert(node.Certificate())
	pool.AppendCertsFromPEM(mustRead(t, src.CAFile))
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	craneOpts := []crane.Option{crane.WithTransport(tr), crane.WithContext(ctx)}

	// crane: the source gives the attacker's image for the tag (the
	// attack is real), the node's serve the signed one.
	if d, err := crane.Digest(src.Host+"/site/quay.io/a/b:1", craneOpts...); err != nil || d != evilDigest.String() {
		t.Fatalf("the source names %s for the tag (%v), want the attacker's %s", d, err, evilDigest)
	}
	nodeRef := node.Listener.Addr().String() + "/quay.io/a/b:1"
	if d, err := crane.Digest(nodeRef, craneOpts...); err != nil || d != signed.String() {
		t.Fatalf("the node's serve names %s for the tag (%v), want the signed %s", d, err, signed)
	}

	// Without its layers the node does not offer the bundle itself.
	if _, err := crane.Digest(node.Listener.Addr().String()+"/zdt/plat:1", craneOpts...); (err == nil) == !replicate {
		t.Fatalf("replicate=%v: the node's serve offers the bundle: %v", replicate, err)
	}

	// The generated mirror configuration: this node alone resolves.
	hostsTOML := mustRead(t, filepath.Join(root, layout.HostsTOML("quay.io")))
	j := newJudge(t, hostsTOML, client)
	localURL, srcURL := "https://"+ln.Addr().String()+"/v2/quay.io", "https://"+src.Host+"/v2/site/quay.io"
	if !slices.Equal(j.hosts, []string{localURL, srcURL}) || !slices.Equal(j.caps[localURL], []string{"pull", "resolve"}) || !slices.Equal(j.caps[srcURL], []string{"pull"}) {
		t.Fatalf("hosts.toml lists %v %v, want this node (pull, resolve) then the source (pull)\n%s", j.hosts, j.caps, hostsTOML)
	}
	conf := mustRead(t, filepath.Join(root, layout.ContainersRegistriesConf))
	var rc registriesConf
	if _, err := toml.Decode(string(conf), &rc); err != nil {
		t.Fatal(err)
	}
	wantMirrors := []mirror{{Location: src.Host + "/site/quay.io", PullFromMirror: "digest-only"}}
	if replicate {
		wantMirrors = append([]mirror{{Location: ln.Addr().String() + "/quay.io"}}, wantMirrors...)
	}
	if len(rc.Registry) != 1 || !slices.Equal(rc.Registry[0].Mirror, wantMirrors) {
		t.Fatalf("registries.conf mirrors %+v, want %+v\n%s", rc.Registry, wantMirrors, conf)
	}

	got, err := j.pull("a/b", "1")
	if err != nil || got != signed {
		t.Fatalf("pulled %s through the mirror configuration (%v), want the signed %s", got, err, signed)
	}
	var fromSource int
	for _, f := range j.fetched {
		if strings.HasPrefix(f, srcURL+" ") {
			fromSource++
		}
		if strings.HasSuffix(f, " "+evilDigest.String()) {
			t.Fatalf("the attacker's image was read: %v", j.fetched)
		}
	}
	if replicate != (fromSource == 0) {
		t.Fatalf("replicate=%v: %d of %v read from the source", replicate, fromSource, j.fetched)
	}

	// A layer: 404 BLOB_UNKNOWN locally (nothing partial) unless replicated,
	// and by digest from the source.
	img, err := crane.Pull(src.Host+"/site/quay.io/a/b@"+signed.String(), craneOpts...)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil || len(layers) == 0 {
		t.Fatal(layers, err)
	}
	ld, _ := layers[0].Digest()
	resp, err := client.Get(localURL + "/a/b/blobs/" + ld.String())
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if replicate {
		if resp.StatusCode != http.StatusOK || digest.FromBytes(body).String() != ld.String() {
			t.Fatalf("replicated layer: %s, %d bytes", resp.Status, len(body))
		}
	} else if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), "BLOB_UNKNOWN") || len(body) > 1024 {
		t.Fatalf("a layer the node lacks: %s %q, want 404 BLOB_UNKNOWN", resp.Status, body)
	}
	if !replicate {
		var te *transport.Error
		if _, err := readLayer(node.Listener.Addr().String()+"/quay.io/a/b@"+ld.String(), craneOpts); !errors.As(err, &te) || te.StatusCode != http.StatusNotFound {
			t.Fatalf("crane reading a layer the node lacks from it: %v, want 404", err)
		}
	}
	if lb, err := readLayer(src.Host+"/site/quay.io/a/b@"+ld.String(), craneOpts); err != nil || digest.FromBytes(lb).String() != ld.String() {
		t.Fatalf("the layer by digest from the source: %v", err)
	}

	// The node's serve down: the tag resolves nowhere, digests still do.
	node.Close()
	tr.CloseIdleConnections()
	if d, host, err := j.resolve("a/b", "1"); err == nil {
		t.Fatalf("with the node's serve down the tag resolved to %s at %s", d, host)
	}
	if _, host, err := j.fetch("a/b", "manifests", signed); err != nil || host != srcURL {
		t.Fatalf("by digest with the node's serve down: %s %v", host, err)
	}
}

// readLayer reads a layer with crane (by digest).
func readLayer(ref string, opts []crane.Option) ([]byte, error) {
	l, err := crane.PullLayer(ref, opts...)
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestInstallFromUpgradeRollbackMetadata: bundles installed from a
// registry without replicating keep only their metadata in the store,
// and generations behave as with a file: an upgrade serves the new
// digest for a tag both versions carry (the old metadata pruned from the
// tags, kept for rollback), a rollback serves the old digest again, and
// status finds the store healthy at each step, no layer copied.
func TestInstallFromUpgradeRollbackMetadata(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := testregistry.New(t, testregistry.Options{})
	remotes := remote.New(nil, 4)
	digests := map[string]digest.Digest{}
	for i, v := range []string{"1", "2"} {
		p := release{version: v, images: map[string]int64{"quay.io/a/b:1": int64(i + 1)}}.build(t, filepath.Join(dir, v))
		a, err := bundle.Open(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range a.RootIndex.Manifests {
			if d.Annotations[manifests.AnnotationRefName] == "quay.io/a/b:1" {
				digests[v] = d.Digest
			}
		}
		if _, err := registry.Push(ctx, a, src.Host+"/site", registry.PushOptions{Remotes: remotes}); err != nil {
			t.Fatal(err)
		}
		a.Close()
	}
	root := filepath.Join(dir, "node")
	opts := FromOptions{Options: Options{Root: root, ToolVersion: "test"}, Policy: signing.Policy{InsecureSkipSignature: true}, Remotes: remotes}
	check := func(v string) {
		t.Helper()
		st, err := GetStatusOf(ctx, root, "")
		if err != nil || !st.Healthy() || st.Registry == nil || st.Registry.Served == 0 || st.Registry.CopiedBytes >= 64<<10 {
			t.Fatalf("status with %s: %+v %v", v, st.Registry, err)
		}
		srv := serveStore(t, root)
		if d, code := manifestDigest(t, srv, "quay.io/a/b", "1"); code != http.StatusOK || d != digests[v].String() {
			t.Fatalf("with %s the node serves %s (%d) for the tag, want %s", v, d, code, digests[v])
		}
	}
	for _, v := range []string{"1", "2"} {
		if _, err := InstallFrom(ctx, src.Host+"/site/zdt/plat:"+v, opts); err != nil {
			t.Fatal(err)
		}
		check(v)
	}
	store, err := registry.OpenStore(root, registry.StoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	if _, err := Rollback(ctx, Options{Root: root, ToolVersion: "test", Registry: store}); err != nil {
		t.Fatal(err)
	}
	check("1")
}
