package cluster

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/restmapper"
	"sigs.k8s.io/yaml"

	"zdt.dev/zdt/installer"
)

// EtcdOptions say how to reach the cluster's etcd for the snapshot taken
// before an install changes releases. Without Endpoints there is no
// snapshot: the objects of the releases about to change are exported
// instead.
type EtcdOptions struct {
	// Endpoints are etcd client URLs (https://HOST:2379); the snapshot
	// is taken from the first that answers.
	Endpoints []string
	// CACert verifies etcd's serving certificate (default: the system
	// roots); Cert and Key are the client certificate etcd requires
	// (kubeadm: /etc/kubernetes/pki/etcd/healthcheck-client.crt, or the
	// API server's apiserver-etcd-client.crt). All PEM files.
	CACert, Cert, Key string
	// Timeout bounds connecting and the status call (default 10s); the
	// snapshot itself runs under the install's context.
	Timeout time.Duration
}

// Bounds on what a backup reads.
const (
	// maxReleaseSize bounds a Helm release record decoded from its
	// storage Secret (Kubernetes keeps a Secret under 1 MiB; gzip can
	// make that much more).
	maxReleaseSize = 2 * MaxRenderSize
	// snapshotSlack is what an etcd snapshot may exceed the database size
	// etcd reported just before by (the database grows in between).
	snapshotSlack = 64 << 20
)

// ErrSnapshot marks a failed etcd snapshot.
var ErrSnapshot = errors.New("etcd snapshot failed")

// BackupKind implements installer.Backuper: an etcd snapshot when
// etcd endpoints are configured, else an export of the releases' objects.
func (d *Deployer) BackupKind() installer.BackupKind {
	if len(d.opts.Etcd.Endpoints) > 0 {
		return installer.BackupEtcd
	}
	return installer.BackupObjects
}

// Backup implements installer.Backuper: it streams an etcd snapshot, or
// the objects of the releases about to change, to w.
func (d *Deployer) Backup(ctx context.Context, w io.Writer, changes []installer.ReleaseChange) (installer.BackupInfo, error) {
	if d.BackupKind() == installer.BackupEtcd {
		return Snapshot(ctx, d.opts.Etcd, w)
	}
	return d.exportObjects(ctx, w, changes)
}

// etcdTLS is the client TLS configuration of o (nil: plain HTTP).
func etcdTLS(o EtcdOptions) (*tls.Config, error) {
	secure := o.CACert != "" || o.Cert != "" || o.Key != ""
	for _, ep := range o.Endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("etcd endpoint %q: want http(s)://HOST:PORT", ep)
		}
		if u.Scheme == "https" {
			secure = true
		} else if o.CACert != "" || o.Cert != "" {
			return nil, fmt.Errorf("etcd endpoint %s is plain HTTP but certificates were given: use https://", ep)
		}
	}
	if !secure {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CACert != "" {
		pem, err := os.ReadFile(o.CACert)
		if err != nil {
			return nil, fmt.Errorf("etcd CA: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcd CA %s: no PEM certificate", o.CACert)
		}
	}
	if (o.Cert == "") != (o.Key == "") {
		return nil, errors.New("etcd client certificate and key go together")
	}
	if o.Cert != "" {
		kp, err := tls.LoadX509KeyPair(o.Cert, o.Key)
		if err != nil {
			return nil, fmt.Errorf("etcd client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return cfg, nil
}

// Snapshot streams a point-in-time snapshot of etcd to w in etcdctl
// snapshot save's format (the database followed by its sha256, which
// etcdutl snapshot restore checks). It asks the first endpoint that
// answers a status call and reads at most the database size that reported
// plus a slack, checks the trailing sha256 against the bytes before it,
// and fails (ErrSnapshot) on a short, long or damaged stream: w then got a
// part only, and the caller must not keep it.
func Snapshot(ctx context.Context, o EtcdOptions, w io.Writer) (installer.BackupInfo, error) {
	if len(o.Endpoints) == 0 {
		return installer.BackupInfo{}, fmt.Errorf("%w: no etcd endpoint", ErrSnapshot)
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	tlsCfg, err := etcdTLS(o)
	if err != nil {
		return installer.BackupInfo{}, err
	}
	var errs []error
	for _, ep := range o.Endpoints {
		cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: o.Timeout, TLS: tlsCfg,
			Logger: zap.NewNop(), Context: ctx})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", ep, err))
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, o.Timeout)
		st, err := cli.Status(sctx, ep)
		cancel()
		if err != nil {
			cli.Close()
			errs = append(errs, fmt.Errorf("%s: %w", ep, err))
			continue
		}
		info, err := snapshotFrom(ctx, cli, ep, st.DbSize, 3*o.Timeout, w)
		cli.Close()
		if err != nil {
			return installer.BackupInfo{}, fmt.Errorf("%w: %s: %w", ErrSnapshot, ep, err)
		}
		info.Source = fmt.Sprintf("etcd %s (server %s, database %d bytes)", ep, st.Version, st.DbSize)
		return info, nil
	}
	return installer.BackupInfo{}, fmt.Errorf("%w: no etcd endpoint answered: %w", ErrSnapshot, errors.Join(errs...))
}

// maxSnapshotSize bounds the database size an endpoint may claim: etcd's
// own recommended maximum quota is 8 GiB, so a larger claim is not a
// Kubernetes etcd and would only fill the disk under --root.
const maxSnapshotSize = 16 << 30

func snapshotFrom(ctx context.Context, cli *clientv3.Client, ep string, dbSize int64, idle time.Duration, w io.Writer) (installer.BackupInfo, error) {
	if dbSize < 0 || dbSize > maxSnapshotSize {
		return installer.BackupInfo{}, fmt.Errorf("etcd reports a database of %d bytes (at most %d accepted)", dbSize, int64(maxSnapshotSize))
	}
	// A stream that stops moving for idle is given up: the install must not
	// hang on a stalled endpoint.
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchdog := time.AfterFunc(idle, cancel)
	defer watchdog.Stop()
	resp, err := cli.SnapshotWithVersion(sctx)
	if err != nil {
		return installer.BackupInfo{}, err
	}
	defer resp.Snapshot.Close()
	limit := dbSize + snapshotSlack + sha256.Size
	cw := &checksumWriter{h: sha256.New()}
	moving := writerFunc(func(p []byte) (int, error) { watchdog.Reset(idle); return len(p), nil })
	n, err := io.Copy(io.MultiWriter(w, cw, moving), io.LimitReader(resp.Snapshot, limit+1))
	if err != nil && sctx.Err() != nil && ctx.Err() == nil {
		err = fmt.Errorf("no snapshot data for %s: %w", idle, err)
	}
	if err != nil {
		return installer.BackupInfo{}, fmt.Errorf("reading the snapshot: %w", err)
	}
	if n > limit {
		return installer.BackupInfo{}, fmt.Errorf("the snapshot is larger than the %d bytes etcd reported (plus %d)", dbSize, snapshotSlack)
	}
	if err := cw.check(n); err != nil {
		return installer.BackupInfo{}, err
	}
	return installer.BackupInfo{}, nil
}

// checksumWriter hashes all but the last sha256.Size bytes written to it
// and keeps those: an etcd snapshot stream ends with the sha256 of what
// comes before.
type checksumWriter struct {
	h    hash.Hash
	tail []byte
}

func (c *checksumWriter) Write(p []byte) (int, error) {
	buf := append(c.tail, p...)
	if len(buf) > sha256.Size {
		c.h.Write(buf[:len(buf)-sha256.Size])
		buf = buf[len(buf)-sha256.Size:]
	}
	c.tail = append(c.tail[:0:0], buf...)
	return len(p), nil
}

// check verifies a stream of n bytes: a database of whole 512-byte
// multiples (bbolt pages) followed by its sha256.
func (c *checksumWriter) check(n int64) error {
	if n < sha256.Size || (n-sha256.Size)%512 != 0 || len(c.tail) != sha256.Size {
		return fmt.Errorf("the snapshot stream of %d bytes has no sha256 trailer (truncated?)", n)
	}
	if !bytes.Equal(c.h.Sum(nil), c.tail) {
		return errors.New("the snapshot does not match its sha256 (damaged in transfer)")
	}
	return nil
}

// exportObjects writes every object of the releases about to change
// (upgraded or uninstalled: their newest revision's manifest) and the CRDs
// they will apply, as read from the cluster now, as YAML documents.
func (d *Deployer) exportObjects(ctx context.Context, w io.Writer, changes []installer.ReleaseChange) (installer.BackupInfo, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(d.rest)
	if err != nil {
		return installer.BackupInfo{}, err
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, "# zdt: the objects of the releases zdt was about to change (install, rollback or uninstall), read from the cluster\n# at %s (no etcd endpoint was given, so this is not an etcd snapshot)\n",
		time.Now().UTC().Format(time.RFC3339))
	var info installer.BackupInfo
	var sources []string
	write := func(comment string, obj map[string]any) error {
		if md, ok := obj["metadata"].(map[string]any); ok {
			delete(md, "managedFields")
		}
		y, err := yaml.Marshal(obj)
		if err != nil {
			return err
		}
		fmt.Fprintf(bw, "---\n# %s\n", printable(comment))
		_, err = bw.Write(y)
		info.Objects++
		return err
	}
	crds := map[string]bool{}
	for _, c := range changes {
		if c.Action == installer.ReleaseUnchanged {
			continue
		}
		rel := key(c.Namespace, c.Name)
		if wnt, ok := d.loaded[rel]; ok {
			for _, crd := range wnt.crds {
				crds[crd.name] = true
			}
		}
		if c.Action == installer.ReleaseInstall {
			continue
		}
		rev, _, err := d.latestRevision(ctx, c.Namespace, c.Name)
		if err != nil {
			return info, err
		}
		if rev == 0 {
			continue
		}
		manifest, err := d.releaseManifest(ctx, c.Namespace, c.Name, rev)
		if err != nil {
			return info, fmt.Errorf("release %s revision %d: %w", rel, rev, err)
		}
		sources = append(sources, fmt.Sprintf("%s revision %d", rel, rev))
		docs, err := manifestObjects(manifest)
		if err != nil {
			return info, fmt.Errorf("release %s revision %d: %w", rel, rev, err)
		}
		for _, o := range docs {
			gv, err := schema.ParseGroupVersion(o.APIVersion)
			if err != nil {
				return info, fmt.Errorf("release %s: object %s %s: %w", rel, o.Kind, o.Metadata.Name, err)
			}
			m, err := mapper.RESTMapping(gv.WithKind(o.Kind).GroupKind(), gv.Version)
			if err != nil {
				fmt.Fprintf(bw, "---\n# %s\n", printable(fmt.Sprintf("release %s revision %d: %s %s: kind not served (%v)", rel, rev, o.Kind, o.Metadata.Name, err)))
				continue
			}
			ri := d.dyn.Resource(m.Resource)
			ns := ""
			var u map[string]any
			if m.Scope.Name() == meta.RESTScopeNameNamespace {
				ns = o.Metadata.Namespace
				if ns == "" {
					ns = c.Namespace
				}
				obj, err := ri.Namespace(ns).Get(ctx, o.Metadata.Name, metav1.GetOptions{})
				if err == nil {
					u = obj.Object
				} else if !apierrors.IsNotFound(err) {
					return info, fmt.Errorf("release %s: reading %s %s/%s: %w", rel, o.Kind, ns, o.Metadata.Name, err)
				}
			} else {
				obj, err := ri.Get(ctx, o.Metadata.Name, metav1.GetOptions{})
				if err == nil {
					u = obj.Object
				} else if !apierrors.IsNotFound(err) {
					return info, fmt.Errorf("release %s: reading %s %s: %w", rel, o.Kind, o.Metadata.Name, err)
				}
			}
			where := strings.TrimPrefix(ns+"/"+o.Metadata.Name, "/")
			if u == nil {
				fmt.Fprintf(bw, "---\n# %s\n", printable(fmt.Sprintf("release %s revision %d: %s %s is not in the cluster", rel, rev, o.Kind, where)))
				continue
			}
			if err := write(fmt.Sprintf("release %s revision %d: %s %s", rel, rev, o.Kind, where), u); err != nil {
				return info, err
			}
		}
	}
	for _, name := range sortedKeys(crds) {
		obj, err := d.dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return info, fmt.Errorf("reading CRD %s: %w", name, err)
		}
		if err := write("CRD "+name+" (applied by zdt before the releases)", obj.Object); err != nil {
			return info, err
		}
	}
	if len(sources) == 0 {
		sources = append(sources, "no release existed yet")
	}
	info.Source = "objects of " + strings.Join(sources, ", ")
	return info, bw.Flush()
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// releaseManifest reads the manifest of revision rev of a release from its
// Helm storage Secret, decoded under maxReleaseSize.
func (d *Deployer) releaseManifest(ctx context.Context, ns, name string, rev int) (string, error) {
	s, err := d.dyn.Resource(secretsGVR).Namespace(ns).Get(ctx, fmt.Sprintf("sh.helm.release.v1.%s.v%d", name, rev), metav1.GetOptions{})
	if err != nil {
		return "", fmt.Errorf("reading its storage Secret: %w", err)
	}
	data, _ := s.Object["data"].(map[string]any)
	enc, _ := data["release"].(string)
	if enc == "" {
		return "", errors.New("its storage Secret holds no release")
	}
	raw, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		return "", fmt.Errorf("its storage Secret: %w", err)
	}
	return decodeRelease(raw)
}

// decodeRelease reads a Helm release record as Helm's Secret driver stores
// it (base64 of gzip of JSON; plain JSON also read) and returns its
// manifest. Decompression stops at maxReleaseSize.
func decodeRelease(raw []byte) (string, error) {
	b := make([]byte, base64.StdEncoding.DecodedLen(len(raw)))
	n, err := base64.StdEncoding.Decode(b, raw)
	if err != nil {
		return "", fmt.Errorf("release record: %w", err)
	}
	b = b[:n]
	if len(b) > 3 && bytes.Equal(b[:3], []byte{0x1f, 0x8b, 0x08}) {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			return "", fmt.Errorf("release record: %w", err)
		}
		b, err = io.ReadAll(io.LimitReader(zr, maxReleaseSize+1))
		if err != nil {
			return "", fmt.Errorf("release record: %w", err)
		}
		if len(b) > maxReleaseSize {
			return "", fmt.Errorf("release record: more than %d bytes decompressed", maxReleaseSize)
		}
	}
	var rec struct {
		Manifest string `json:"manifest"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return "", fmt.Errorf("release record: %w", err)
	}
	return rec.Manifest, nil
}

// objectHead is what identifies a manifest's object.
type objectHead struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string `json:"name"`
		Namespace string `json:"namespace"`
	} `json:"metadata"`
}

// manifestObjects lists the objects of a release manifest (YAML documents;
// empty and comment-only ones skipped). An object without apiVersion, kind
// or name is refused.
func manifestObjects(manifest string) ([]objectHead, error) {
	var out []objectHead
	r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifest)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) == 0 {
			continue
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, err
		}
		if string(j) == "null" {
			continue
		}
		var h objectHead
		if err := json.Unmarshal(j, &h); err != nil {
			return nil, err
		}
		if h.APIVersion == "" || h.Kind == "" || h.Metadata.Name == "" {
			return nil, fmt.Errorf("an object without apiVersion, kind or name: %.100s", doc)
		}
		out = append(out, h)
	}
}

// writerFunc is an io.Writer made of a function.
type writerFunc func(p []byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
