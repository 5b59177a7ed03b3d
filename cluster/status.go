package cluster

import (
	"context"
	"fmt"
	"strings"

	"github.com/fluxcd/cli-utils/pkg/kstatus/status"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"

	"zdt.dev/zdt/installer"
)

// MaxHealthObjects bounds the objects of one release whose status is read.
const MaxHealthObjects = 2000

// ReleaseHealth is a release as the cluster has it now.
type ReleaseHealth struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Revision is the newest revision in the cluster (0: no release).
	Revision int `json:"revision"`
	// Status is Helm's status of that revision (deployed, failed, ...).
	Status string `json:"status,omitempty"`
	// Ready is true when the revision is deployed and every object of
	// its manifest exists and is Current by kstatus.
	Ready bool `json:"ready"`
	// NotReady names the first object that is not ready (or why the
	// release is not), "KIND NAMESPACE/NAME: STATUS: MESSAGE".
	NotReady string `json:"notReady,omitempty"`
}

// Health reads each release's newest revision and the objects of its
// manifest from the cluster, without waiting, and computes their status
// with kstatus (Helm v4's readiness rules). It only reads.
func (d *Deployer) Health(ctx context.Context, rs []installer.Release) ([]ReleaseHealth, error) {
	out := make([]ReleaseHealth, 0, len(rs))
	for _, r := range rs {
		h, err := d.health(ctx, r)
		if err != nil {
			return nil, fmt.Errorf("release %s/%s: %w", r.Namespace, r.Name, err)
		}
		out = append(out, h)
	}
	return out, nil
}

func (d *Deployer) health(ctx context.Context, r installer.Release) (ReleaseHealth, error) {
	h := ReleaseHealth{Namespace: r.Namespace, Name: r.Name}
	latest, st, err := d.latestRevision(ctx, r.Namespace, r.Name)
	if err != nil {
		return h, err
	}
	// The status and the messages below are cluster text (Helm's storage,
	// objects' conditions): one printable line each.
	st = clean(st)
	h.Revision, h.Status = latest, st
	if latest == 0 {
		h.NotReady = "no such release in the cluster"
		return h, nil
	}
	if st != "deployed" {
		h.NotReady = "revision " + fmt.Sprint(latest) + " is " + st
		return h, nil
	}
	rel, err := d.getRelease(r.Namespace, r.Name, latest)
	if err != nil {
		return h, fmt.Errorf("reading revision %d: %w", latest, err)
	}
	cfg, err := d.helmConfig(r.Namespace)
	if err != nil {
		return h, err
	}
	objs, err := cfg.KubeClient.Build(strings.NewReader(rel.Manifest), false)
	if err != nil {
		return h, fmt.Errorf("the manifest of revision %d: %w", latest, err)
	}
	if len(objs) > MaxHealthObjects {
		return h, fmt.Errorf("revision %d has %d objects, more than %d", latest, len(objs), MaxHealthObjects)
	}
	for _, o := range objs {
		kind := o.Mapping.GroupVersionKind.Kind
		where := o.Name
		if o.Namespace != "" {
			where = o.Namespace + "/" + o.Name
		}
		var ri dynamic.ResourceInterface = d.dyn.Resource(o.Mapping.Resource)
		if o.Namespace != "" {
			ri = d.dyn.Resource(o.Mapping.Resource).Namespace(o.Namespace)
		}
		var res *status.Result
		u, err := ri.Get(ctx, o.Name, metav1.GetOptions{})
		if err == nil {
			res, err = status.Compute(u)
		}
		switch {
		case apierrors.IsNotFound(err):
			h.NotReady = clean(fmt.Sprintf("%s %s: not found", kind, where))
			return h, nil
		case err != nil:
			return h, fmt.Errorf("%s %s: %w", kind, where, err)
		case res.Status != status.CurrentStatus:
			h.NotReady = fmt.Sprintf("%s %s: %s", kind, where, res.Status)
			if res.Message != "" {
				h.NotReady += ": " + res.Message
			}
			h.NotReady = clean(h.NotReady)
			return h, nil
		}
	}
	h.Ready = true
	return h, nil
}
