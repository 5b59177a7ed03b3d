package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"helm.sh/helm/v4/pkg/action"
	"helm.sh/helm/v4/pkg/chart/common"
	commonutil "helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/kube"
	release "helm.sh/helm/v4/pkg/release/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/rest"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/charts"
	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/manifests"
)

// Limits on what a bundle or the cluster can make the deployer hold.
const (
	// MaxHistory is the number of Helm revisions kept per release
	// (upgrades delete older ones) and, doubled, the most the deployer
	// lists before it refuses a release.
	MaxHistory = 10
	// MaxValuesSize bounds a chart's values in the bundle config.
	MaxValuesSize = 4 << 20
	// MaxRenderSize bounds a chart's rendered manifests.
	MaxRenderSize = 32 << 20
	// renderTimeout bounds rendering one chart.
	renderTimeout = 30 * time.Second
)

// ErrRelease marks a release that failed to deploy; the error names it.
var ErrRelease = errors.New("release failed")

// Options configure a Deployer. Every zero field has the documented default.
type Options struct {
	// Kubeconfig is the kubeconfig file; empty means $KUBECONFIG, then
	// ~/.kube/config, then the in-cluster configuration.
	Kubeconfig string
	// InCluster uses rest.InClusterConfig (the pod's service account)
	// instead of any kubeconfig (SelectTarget decides).
	InCluster bool
	// Context is the kubeconfig context (default: its current context).
	Context string
	// Timeout bounds waiting for one release's resources to be ready and
	// for CRDs to be Established (default 5m).
	Timeout time.Duration
	// Logger receives progress (default: discard).
	Logger *slog.Logger
	// Values are values files given at install time (--values CHART=FILE),
	// by chart name or COMPONENT/CHART, merged over the bundle's values
	// for that chart (the override wins). Their effect is part of the
	// values digest the generation records: the same override again is
	// no change, a changed one is an upgrade.
	Values map[string][]byte
	// Etcd is where the snapshot taken before releases change comes from
	// (Backup); without endpoints the releases' objects are exported.
	Etcd EtcdOptions
	// RewriteImages is HOST[:PORT] of the registry serving the bundle
	// (--rewrite-images, for nodes zdt did not configure): every string
	// of the rendered manifests that is one of the bundle's images is
	// rewritten to its name there (imageRewriter). Empty: no rewrite.
	RewriteImages string
}

// Deployer deploys a bundle's charts (installer.Deployer).
type Deployer struct {
	opts   Options
	rest   *rest.Config
	dyn    dynamic.Interface
	meta   metadata.Interface
	loaded map[string]*desired // by release key, from PlanReleases
	// rewriter is the post-renderer of Options.RewriteImages (nil: none).
	rewriter *imageRewriter
	// inCluster is the in-cluster configuration (Options.InCluster).
	inCluster *rest.Config
}

var _ installer.Deployer = (*Deployer)(nil)

// New connects to the cluster named by opts (no request is sent yet).
func New(opts Options) (*Deployer, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	d := &Deployer{opts: opts, loaded: map[string]*desired{}}
	if opts.RewriteImages != "" {
		if err := CheckRegistryHost(opts.RewriteImages); err != nil {
			return nil, err
		}
	}
	if opts.InCluster {
		ic, err := inClusterConfig()
		if err != nil {
			return nil, fmt.Errorf("in-cluster configuration: %w", err)
		}
		d.inCluster = tuneConfig(ic)
	}
	cfg, err := d.getter("").ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	d.rest = cfg
	if d.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		return nil, err
	}
	if d.meta, err = metadata.NewForConfig(cfg); err != nil {
		return nil, err
	}
	return d, nil
}

// desired is one release the bundle asks for, loaded and rendered.
type desired struct {
	rel    installer.Release
	chart  *chart.Chart
	values map[string]any
	crds   []crdDoc
	// rendered are the templates' output by name (for --plan --diff).
	rendered map[string]string
}

func key(ns, name string) string { return ns + "/" + name }

// PlanReleases loads and renders every chart of the bundle in order and
// compares it with the installed releases and the cluster's Helm history
// (read as metadata, bounded). It writes nothing.
func (d *Deployer) PlanReleases(ctx context.Context, a *bundle.Archive, g *bundle.Graph, installed []installer.Release) ([]installer.ReleaseChange, error) {
	want, err := d.desiredReleases(ctx, a, g)
	if err != nil {
		return nil, err
	}
	return d.plan(ctx, want, installed)
}

// plan compares the desired releases with the installed ones and the
// cluster's Helm history.
func (d *Deployer) plan(ctx context.Context, want []*desired, installed []installer.Release) ([]installer.ReleaseChange, error) {
	prev := map[string]installer.Release{}
	for _, r := range installed {
		prev[key(r.Namespace, r.Name)] = r
	}
	var out []installer.ReleaseChange
	for _, w := range want {
		k := key(w.rel.Namespace, w.rel.Name)
		d.loaded[k] = w
		latest, status, err := d.latestRevision(ctx, w.rel.Namespace, w.rel.Name)
		if err != nil {
			return nil, err
		}
		c := installer.ReleaseChange{Release: w.rel}
		p, recorded := prev[k]
		switch {
		case latest == 0:
			c.Action = installer.ReleaseInstall
		default:
			c.Action, c.Revision = installer.ReleaseUpgrade, latest
			if !recorded {
				c.Reasons = append(c.Reasons, "not recorded by zdt")
				break
			}
			if p.ChartDigest != w.rel.ChartDigest {
				if p.Version == w.rel.Version {
					c.Reasons = append(c.Reasons, fmt.Sprintf("chart %s content", p.Version))
				} else {
					c.Reasons = append(c.Reasons, fmt.Sprintf("chart %s -> %s", p.Version, w.rel.Version))
				}
			}
			if p.ValuesDigest != w.rel.ValuesDigest {
				c.Reasons = append(c.Reasons, "values")
			}
			if p.CRDDigest != "" && p.CRDDigest != w.rel.CRDDigest {
				c.Reasons = append(c.Reasons, "CRDs")
			}
			if p.ImageRegistry != w.rel.ImageRegistry {
				c.Reasons = append(c.Reasons, fmt.Sprintf("image registry %q -> %q", p.ImageRegistry, w.rel.ImageRegistry))
			}
			if p.ManifestDigest != w.rel.ManifestDigest {
				c.Reasons = append(c.Reasons, "manifests")
			}
			if latest != p.Revision {
				c.Reasons = append(c.Reasons, fmt.Sprintf("revision %d in the cluster, %d recorded", latest, p.Revision))
			}
			if status != "deployed" {
				c.Reasons = append(c.Reasons, "status "+status)
			}
			if len(c.Reasons) == 0 {
				c.Action = installer.ReleaseUnchanged
			}
		}
		out = append(out, c)
	}
	// Releases the installed generation deployed that the bundle no longer
	// has: uninstalled after the others, in reverse order. Their CRDs
	// stay (deleting a CRD deletes every object of it).
	for i := len(installed) - 1; i >= 0; i-- {
		r := installed[i]
		if _, still := d.loaded[key(r.Namespace, r.Name)]; still {
			continue
		}
		latest, _, err := d.latestRevision(ctx, r.Namespace, r.Name)
		if err != nil {
			return nil, err
		}
		if latest == 0 {
			continue // already gone
		}
		out = append(out, installer.ReleaseChange{Action: installer.ReleaseUninstall, Release: r,
			Reasons: []string{"not in the bundle; its CRDs are kept"}})
	}
	return out, nil
}

// desiredReleases reads every chart item of the bundle, in order.
func (d *Deployer) desiredReleases(ctx context.Context, a *bundle.Archive, g *bundle.Graph) ([]*desired, error) {
	spec, err := manifests.Parse("zdt.yaml (bundle config)", []byte(a.Config.Spec))
	if err != nil {
		return nil, fmt.Errorf("bundle spec: %w", err)
	}
	specs := map[string]manifests.Chart{}
	for _, comp := range spec.Components {
		for _, ch := range comp.Charts {
			specs[comp.Name+"/"+ch.Name] = ch
		}
	}
	if d.opts.RewriteImages != "" {
		var refs []string
		for _, it := range g.Items {
			if it.Kind == manifests.KindImage {
				refs = append(refs, it.Ref)
			}
		}
		if d.rewriter, err = newImageRewriter(d.opts.RewriteImages, refs); err != nil {
			return nil, err
		}
	}
	var out []*desired
	seen := map[string]string{}
	used := map[string]bool{}
	for _, it := range g.Items {
		if it.Kind != manifests.KindChart {
			continue
		}
		sc, ok := specs[it.Component+"/"+it.Name]
		if !ok {
			return nil, fmt.Errorf("chart %s of component %s: not in the bundle's spec", it.Name, it.Component)
		}
		w, err := d.load(ctx, a, g, it, sc)
		if err != nil {
			return nil, fmt.Errorf("chart %s of component %s: %w", it.Name, it.Component, err)
		}
		k := key(w.rel.Namespace, w.rel.Name)
		if other, dup := seen[k]; dup {
			return nil, fmt.Errorf("chart %s of component %s: release %s is also chart %s's", it.Name, it.Component, k, other)
		}
		seen[k] = it.Component + "/" + it.Name
		used[it.Name], used[it.Component+"/"+it.Name] = true, true
		out = append(out, w)
	}
	for k := range d.opts.Values {
		if !used[k] {
			return nil, fmt.Errorf("--values %s: the bundle has no chart %s", k, k)
		}
	}
	return out, nil
}

func (d *Deployer) load(ctx context.Context, a *bundle.Archive, g *bundle.Graph, it bundle.Item, sc manifests.Chart) (*desired, error) {
	name, ns := sc.Release, sc.Namespace
	if name == "" {
		name = sc.Name
	}
	if ns == "" {
		ns = it.Component
	}
	if err := chartutil.ValidateReleaseName(name); err != nil {
		return nil, fmt.Errorf("release name %q: %w", name, err)
	}
	if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
		return nil, fmt.Errorf("namespace %q: %s", ns, strings.Join(errs, "; "))
	}
	tgz, err := chartArchive(ctx, a, g, digest.Digest(it.Digest))
	if err != nil {
		return nil, err
	}
	ch, err := loader.LoadArchive(bytes.NewReader(tgz))
	if err != nil {
		return nil, fmt.Errorf("loading: %w", err)
	}
	vals := map[string]any{}
	if raw := a.Config.Values[it.Component+"/"+it.Name]; raw != "" {
		if len(raw) > MaxValuesSize {
			return nil, fmt.Errorf("values: %d bytes, more than %d", len(raw), MaxValuesSize)
		}
		if vals, err = common.ReadValues([]byte(raw)); err != nil {
			return nil, fmt.Errorf("values: %w", err)
		}
	}
	for _, k := range []string{it.Name, it.Component + "/" + it.Name} {
		raw, ok := d.opts.Values[k]
		if !ok {
			continue
		}
		if len(raw) > MaxValuesSize {
			return nil, fmt.Errorf("--values %s: %d bytes, more than %d", k, len(raw), MaxValuesSize)
		}
		over, err := common.ReadValues(raw)
		if err != nil {
			return nil, fmt.Errorf("--values %s: %w", k, err)
		}
		vals = commonutil.MergeTables(over, vals)
	}
	valuesJSON, err := json.Marshal(vals) // map keys sorted: canonical
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	// Render a copy (rendering processes dependencies in place) under the
	// create-time bounds; its digest, with the CRDs', is what "unchanged"
	// compares.
	renderCopy, err := loader.LoadArchive(bytes.NewReader(tgz))
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithTimeout(ctx, renderTimeout)
	rendered, err := charts.Render(rctx, renderCopy, vals, name, ns, MaxRenderSize)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("rendering: %w", err)
	}
	return d.finish(it, name, ns, ch, vals, valuesJSON, rendered)
}

// finish makes the desired release of a loaded and rendered chart: with
// --rewrite-images the rendered templates are rewritten as the
// post-renderer will rewrite them at deploy, so the manifest digest
// follows the registry host.
func (d *Deployer) finish(it bundle.Item, name, ns string, ch *chart.Chart, vals map[string]any, valuesJSON []byte, rendered map[string]string) (*desired, error) {
	var host string
	if d.rewriter != nil {
		var err error
		if rendered, err = d.rewriter.rewriteRendered(rendered); err != nil {
			return nil, err
		}
		host = d.rewriter.host
	}
	crds, err := crdDocs(ch)
	if err != nil {
		return nil, err
	}
	return &desired{
		rel: installer.Release{
			Component: it.Component, Chart: it.Name, Name: name, Namespace: ns,
			Version: ch.Metadata.Version, ChartDigest: it.Digest,
			ValuesDigest:   sha(valuesJSON),
			ManifestDigest: manifestDigest(rendered, crds),
			CRDDigest:      manifestDigest(nil, crds),
			ImageRegistry:  host,
		},
		chart: ch, values: vals, crds: crds, rendered: rendered,
	}, nil
}

// chartArchive returns the chart layer of a chart item, size-bounded and
// digest-checked.
func chartArchive(ctx context.Context, a *bundle.Archive, g *bundle.Graph, item digest.Digest) ([]byte, error) {
	for _, e := range g.Children[item] {
		if e.Role != "layer" || e.Desc.MediaType != manifests.MediaTypeHelmChart {
			continue
		}
		if e.Desc.Size > charts.MaxChartSize {
			return nil, fmt.Errorf("chart layer is %d bytes, more than %d", e.Desc.Size, charts.MaxChartSize)
		}
		r, err := a.Fetch(ctx, ocispec.Descriptor{Digest: e.Desc.Digest, Size: e.Desc.Size})
		if err != nil {
			return nil, err
		}
		defer r.Close()
		b, err := io.ReadAll(io.LimitReader(r, e.Desc.Size+1))
		if err != nil {
			return nil, err
		}
		if int64(len(b)) != e.Desc.Size || digest.FromBytes(b) != e.Desc.Digest {
			return nil, fmt.Errorf("chart layer %s: content does not match its descriptor: %w", e.Desc.Digest, bundle.ErrDigestMismatch)
		}
		return b, nil
	}
	return nil, fmt.Errorf("no chart layer (%s)", manifests.MediaTypeHelmChart)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// manifestDigest hashes the rendered templates in name order, then the
// CRDs in file order, each with its name and length.
func manifestDigest(rendered map[string]string, crds []crdDoc) string {
	h := sha256.New()
	names := make([]string, 0, len(rendered))
	for n := range rendered {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(h, "%s\x00%d\x00%s", n, len(rendered[n]), rendered[n])
	}
	for _, c := range crds {
		fmt.Fprintf(h, "crd:%s\x00%d\x00%s", c.name, len(c.json), c.json)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}

var secretsGVR = schema.GroupVersionResource{Version: "v1", Resource: "secrets"}

// latestRevision returns the newest Helm revision of a release and its
// status, reading the storage Secrets' labels only (metadata list, at most
// 2*MaxHistory of them): 0 when there is none.
func (d *Deployer) latestRevision(ctx context.Context, ns, name string) (int, string, error) {
	list, err := d.meta.Resource(secretsGVR).Namespace(ns).List(ctx, metav1.ListOptions{
		LabelSelector: "owner=helm,name=" + name,
		Limit:         2 * MaxHistory,
	})
	if err != nil {
		return 0, "", fmt.Errorf("release %s/%s: listing its history: %w", ns, name, err)
	}
	if list.Continue != "" || len(list.Items) > 2*MaxHistory {
		return 0, "", fmt.Errorf("release %s/%s: more than %d revisions in the cluster; trim its history first", ns, name, 2*MaxHistory)
	}
	best, status := 0, ""
	for _, it := range list.Items {
		v, err := strconv.Atoi(it.Labels["version"])
		if err != nil || v <= 0 {
			continue
		}
		if v > best {
			best, status = v, it.Labels["status"]
		}
	}
	return best, status, nil
}

// Deploy applies the CRDs of every changing release, then installs or
// upgrades the changing releases in order, each waited ready. It stops at
// the first failure with an error naming the release (matching
// ErrRelease).
func (d *Deployer) Deploy(ctx context.Context, a *bundle.Archive, changes []installer.ReleaseChange) ([]installer.Release, error) {
	out := make([]installer.Release, 0, len(changes))
	var todo []*desired
	for _, c := range changes {
		if c.Action == installer.ReleaseUnchanged || c.Action == installer.ReleaseUninstall {
			continue
		}
		w, ok := d.loaded[key(c.Namespace, c.Name)]
		if !ok {
			return nil, fmt.Errorf("release %s/%s was not planned", c.Namespace, c.Name)
		}
		todo = append(todo, w)
	}
	if err := d.applyCRDs(ctx, todo); err != nil {
		return nil, err
	}
	for _, c := range changes {
		if c.Action == installer.ReleaseUnchanged {
			out = append(out, c.Release)
			continue
		}
		if c.Action == installer.ReleaseUninstall {
			if err := d.uninstall(ctx, c.Release); err != nil {
				return nil, fmt.Errorf("%w: uninstalling %s/%s (component %s, chart %s %s): %w", ErrRelease, c.Namespace, c.Name, c.Component, c.Chart, c.Version, err)
			}
			d.opts.Logger.Info("release uninstalled", "release", c.Name, "namespace", c.Namespace)
			continue
		}
		w := d.loaded[key(c.Namespace, c.Name)]
		began := time.Now()
		rev, err := d.deployOne(ctx, c.Action, w)
		if err != nil {
			err = fmt.Errorf("%w: %s/%s (component %s, chart %s %s): %w", ErrRelease, c.Namespace, c.Name, c.Component, c.Chart, c.Version, err)
			return nil, withWarnings(err, d.warnings(ctx, c.Namespace, began))
		}
		r := w.rel
		r.Revision = rev
		d.opts.Logger.Info("release deployed", "release", c.Name, "namespace", c.Namespace, "action", c.Action, "revision", rev)
		out = append(out, r)
	}
	return out, nil
}

// newFlags is the client configuration for namespace ns (Helm's kube
// client is built from it, per namespace).
func (d *Deployer) newFlags(ns string) *genericclioptions.ConfigFlags {
	flags := genericclioptions.NewConfigFlags(false)
	if d.opts.Kubeconfig != "" {
		flags.KubeConfig = &d.opts.Kubeconfig
	}
	if d.opts.Context != "" {
		flags.Context = &d.opts.Context
	}
	if ns != "" {
		flags.Namespace = &ns
	}
	flags.WrapConfigFn = tuneConfig
	return flags
}

// getter is the client configuration for namespace ns: the kubeconfig's
// (newFlags) or the in-cluster one.
func (d *Deployer) getter(ns string) genericclioptions.RESTClientGetter {
	if d.inCluster != nil {
		return restGetter{cfg: d.inCluster, ns: ns}
	}
	return d.newFlags(ns)
}

// tuneConfig sets one rate limit that does not throttle a deploy of many
// small charts, and zdt's user agent.
func tuneConfig(c *rest.Config) *rest.Config {
	c.QPS, c.Burst = 50, 100
	c.UserAgent = "zdt"
	return c
}

func (d *Deployer) uninstall(ctx context.Context, r installer.Release) error {
	cfg, err := d.helmConfig(r.Namespace)
	if err != nil {
		return err
	}
	un := action.NewUninstall(cfg)
	un.WaitStrategy, un.Timeout = kube.StatusWatcherStrategy, d.opts.Timeout
	_, err = un.Run(r.Name)
	return err
}

func (d *Deployer) helmConfig(ns string) (*action.Configuration, error) {
	cfg := action.NewConfiguration(action.ConfigurationSetLogger(d.opts.Logger.Handler()))
	if err := cfg.Init(d.getter(ns), ns, "secret"); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (d *Deployer) deployOne(ctx context.Context, act installer.Action, w *desired) (int, error) {
	cfg, err := d.helmConfig(w.rel.Namespace)
	if err != nil {
		return 0, err
	}
	var rel any
	if act == installer.ReleaseInstall {
		in := action.NewInstall(cfg)
		in.ReleaseName, in.Namespace, in.CreateNamespace = w.rel.Name, w.rel.Namespace, true
		in.SkipCRDs = true // applied by server-side apply before
		in.WaitStrategy, in.Timeout = kube.StatusWatcherStrategy, d.opts.Timeout
		in.ServerSideApply = true
		in.RollbackOnFailure = true // a failed install is uninstalled
		if d.rewriter != nil {
			in.PostRenderer = d.rewriter
		}
		rel, err = in.RunWithContext(ctx, w.chart, w.values)
	} else {
		up := action.NewUpgrade(cfg)
		up.Namespace, up.MaxHistory = w.rel.Namespace, MaxHistory
		up.SkipCRDs, up.ResetValues = true, true
		up.WaitStrategy, up.Timeout = kube.StatusWatcherStrategy, d.opts.Timeout
		up.ServerSideApply = "auto"
		// A failed upgrade goes back to the previous revision and drops
		// what it created; later releases are not touched.
		up.RollbackOnFailure, up.CleanupOnFail = true, true
		if d.rewriter != nil {
			up.PostRenderer = d.rewriter
		}
		rel, err = up.RunWithContext(ctx, w.rel.Name, w.chart, w.values)
	}
	if err != nil {
		return 0, err
	}
	r, ok := rel.(*release.Release)
	if !ok {
		return 0, fmt.Errorf("helm returned a %T", rel)
	}
	return r.Version, nil
}
