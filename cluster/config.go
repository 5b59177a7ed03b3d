package cluster

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Target says which cluster install deploys to.
type Target struct {
	// Kubeconfig is the kubeconfig file (--kubeconfig, else $KUBECONFIG).
	Kubeconfig string
	// InCluster means the pod's service account (rest.InClusterConfig):
	// there is no kubeconfig and KUBERNETES_SERVICE_HOST is set.
	InCluster bool
}

// SelectTarget picks the cluster from the --kubeconfig flag and the
// environment (getenv, e.g. os.Getenv): the flag, else $KUBECONFIG, else
// the in-cluster configuration when KUBERNETES_SERVICE_HOST is set (zdt
// runs in a pod). ok is false when there is none: charts are only served.
func SelectTarget(kubeconfig string, getenv func(string) string) (t Target, ok bool) {
	switch {
	case kubeconfig != "":
		return Target{Kubeconfig: kubeconfig}, true
	case getenv("KUBECONFIG") != "":
		return Target{Kubeconfig: getenv("KUBECONFIG")}, true
	case getenv("KUBERNETES_SERVICE_HOST") != "":
		return Target{InCluster: true}, true
	}
	return Target{}, false
}

func (t Target) String() string {
	if t.InCluster {
		return "in-cluster configuration (service account)"
	}
	return "kubeconfig " + t.Kubeconfig
}

// inClusterConfig is rest.InClusterConfig; a variable so tests can stand
// in for the service account files.
var inClusterConfig = rest.InClusterConfig

// restGetter is the RESTClientGetter Helm is given for one namespace when
// the configuration is not a kubeconfig (in-cluster): every client is built
// from cfg.
type restGetter struct {
	cfg *rest.Config
	ns  string
}

var _ genericclioptions.RESTClientGetter = restGetter{}

func (g restGetter) ToRESTConfig() (*rest.Config, error) { return rest.CopyConfig(g.cfg), nil }

func (g restGetter) ToDiscoveryClient() (discovery.CachedDiscoveryInterface, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(rest.CopyConfig(g.cfg))
	if err != nil {
		return nil, fmt.Errorf("discovery: %w", err)
	}
	return memory.NewMemCacheClient(dc), nil
}

func (g restGetter) ToRESTMapper() (meta.RESTMapper, error) {
	dc, err := g.ToDiscoveryClient()
	if err != nil {
		return nil, err
	}
	m := restmapper.NewDeferredDiscoveryRESTMapper(dc)
	return restmapper.NewShortcutExpander(m, dc, nil), nil
}

// ToRawKubeConfigLoader answers the namespace only (Helm asks it); the
// connection is cfg's.
func (g restGetter) ToRawKubeConfigLoader() clientcmd.ClientConfig {
	ns := g.ns
	if ns == "" {
		ns = "default"
	}
	c := clientcmdapi.NewConfig()
	c.Clusters["in-cluster"] = &clientcmdapi.Cluster{Server: g.cfg.Host}
	c.AuthInfos["in-cluster"] = &clientcmdapi.AuthInfo{}
	c.Contexts["in-cluster"] = &clientcmdapi.Context{Cluster: "in-cluster", AuthInfo: "in-cluster", Namespace: ns}
	c.CurrentContext = "in-cluster"
	return clientcmd.NewDefaultClientConfig(*c, &clientcmd.ConfigOverrides{})
}
