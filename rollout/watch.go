package rollout

import (
	"context"
	"maps"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// DefaultResync is the agent's default resync interval (AgentOptions.Poll).
const DefaultResync = 30 * time.Second

// Run works until ctx ends. It watches the rollout ConfigMap and this
// agent's Node (each watch limited by a field selector to that one
// object; a watch that fails or expires lists again with client-go's
// backoff) and runs Step on each change, on start, every Poll (the
// resync, in case a change went unseen), and every third of LeaseDuration
// while the node waits for its turn (a slot whose holder stopped renewing
// it frees up without a change anyone sees). A failed step pauses the
// rollout (recorded with the error) and leaves the node cordoned,
// holding its slot; Run goes on waiting for a resume. Errors of the API
// server are logged and retried with backoff (0.5 s doubling up to Poll),
// so an unreachable API server is never asked in a busy loop.
func (a *Agent) Run(ctx context.Context) error {
	ctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stop()
	wg.Go(func() { a.renewLoop(ctx) })

	kick := make(chan struct{}, 1)
	poke := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	cm := cache.NewSharedIndexInformer(a.configMapLW(), &corev1.ConfigMap{}, 0, cache.Indexers{})
	node := cache.NewSharedIndexInformer(a.nodeLW(), &corev1.Node{}, 0, cache.Indexers{})
	if _, err := cm.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	}); err != nil {
		return err
	}
	if _, err := node.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(any) { poke() },
		// Status heartbeats change nothing the agent looks at.
		UpdateFunc: func(o, n any) {
			if nodeChanged(o, n) {
				poke()
			}
		},
		DeleteFunc: func(any) { poke() },
	}); err != nil {
		return err
	}
	wg.Go(func() { cm.RunWithContext(ctx) })
	wg.Go(func() { node.RunWithContext(ctx) })
	wg.Go(func() {
		if cache.WaitForCacheSync(ctx.Done(), cm.HasSynced, node.HasSynced) {
			a.o.Logger.Debug("watching the rollout", "node", a.o.Node, "resync", a.o.Poll)
			a.watchingOnce.Do(func() { close(a.watching) })
		}
	})

	recheck := min(max(a.o.LeaseDuration/3, 500*time.Millisecond), a.o.Poll)
	var errDelay time.Duration
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-kick:
		case <-t.C:
		}
		waiting, err := a.step(ctx)
		next := a.o.Poll
		if err != nil && ctx.Err() == nil {
			a.o.Logger.Warn("rollout", "node", a.o.Node, "error", err)
			errDelay = min(max(2*errDelay, 500*time.Millisecond), a.o.Poll)
			next = errDelay
		} else {
			errDelay = 0
		}
		if waiting {
			next = min(next, recheck)
		}
		t.Reset(next)
	}
}

// configMapLW lists and watches the rollout ConfigMap only.
func (a *Agent) configMapLW() cache.ListerWatcher {
	cms := a.cs.CoreV1().ConfigMaps(Namespace)
	return oneObjectLW(a.cs, ConfigMapName, cms.List, cms.Watch)
}

// nodeLW lists and watches this agent's Node only.
func (a *Agent) nodeLW() cache.ListerWatcher {
	nodes := a.cs.CoreV1().Nodes()
	return oneObjectLW(a.cs, a.o.Node, nodes.List, nodes.Watch)
}

// oneObjectLW lists and watches the object called name only (a field
// selector: the agent caches neither every ConfigMap nor every Node of the
// cluster). It tells the reflector when the client cannot stream a list
// through a watch (client-go's fake clientset: an informer over it never
// synced).
func oneObjectLW[L runtime.Object](cs kubernetes.Interface, name string,
	list func(context.Context, metav1.ListOptions) (L, error),
	watchFn func(context.Context, metav1.ListOptions) (watch.Interface, error)) cache.ListerWatcher {
	sel := fields.OneTermEqualSelector("metadata.name", name).String()
	return cache.ToListWatcherWithWatchListSemantics(&cache.ListWatch{
		ListWithContextFunc: func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
			o.FieldSelector = sel
			return list(ctx, o)
		},
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			o.FieldSelector = sel
			return watchFn(ctx, o)
		},
	}, cs)
}

// nodeChanged reports whether an update of the Node changed what Step
// reads: annotations, labels, the cordon flag or readiness.
func nodeChanged(o, n any) bool {
	on, ok1 := o.(*corev1.Node)
	nn, ok2 := n.(*corev1.Node)
	if !ok1 || !ok2 {
		return true
	}
	return !maps.Equal(on.Annotations, nn.Annotations) || !maps.Equal(on.Labels, nn.Labels) ||
		on.Spec.Unschedulable != nn.Spec.Unschedulable || nodeReady(on) != nodeReady(nn)
}
