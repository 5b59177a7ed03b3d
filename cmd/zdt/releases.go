package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"zdt.dev/zdt/cluster"
	"zdt.dev/zdt/installer"
)

// clusterOptions are the flags of a command that acts on the releases
// install deployed (rollback, uninstall, status).
type clusterOptions struct {
	kubeconfig string
	timeout    time.Duration
}

func (o *clusterOptions) AddFlags(fs *pflag.FlagSet, what string) {
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", what+" (default $KUBECONFIG)")
	fs.DurationVar(&o.timeout, "timeout", 5*time.Minute, "how long to wait for one release to become ready or be gone")
}

// deployer is the cluster of --kubeconfig or $KUBECONFIG, or the
// in-cluster configuration in a pod (cluster.SelectTarget; nil: none).
func (o *clusterOptions) deployer(g *globals) (*cluster.Deployer, error) {
	tgt, ok := cluster.SelectTarget(o.kubeconfig, os.Getenv)
	if !ok {
		return nil, nil
	}
	return cluster.New(cluster.Options{Kubeconfig: tgt.Kubeconfig, InCluster: tgt.InCluster, Timeout: o.timeout, Logger: g.logger()})
}

// renderReleaseChanges prints what rollback or uninstall did to releases.
func renderReleaseChanges(w io.Writer, cs []installer.ReleaseChange) {
	for _, r := range cs {
		why := ""
		if len(r.Reasons) > 0 {
			why = " (" + strings.Join(r.Reasons, ", ") + ")"
		}
		sign := releaseSigns[r.Action]
		if r.Action == installer.ReleaseRollback {
			sign = "<"
		}
		fmt.Fprintf(w, "  %s release %-42s %s %s %s%s\n", sign, r.Namespace+"/"+r.Name, r.Action, r.Chart, r.Version, why)
	}
}
