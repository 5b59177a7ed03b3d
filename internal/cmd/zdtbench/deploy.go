package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"gopkg.in/yaml.v3"
)

// The deploy rows: a bundle of deployCharts small charts in three
// components installed into a real kube-apiserver + etcd (the kubetest
// harness, started by bin/kubecluster) with `zdt install --kubeconfig`,
// against the stock helm CLI running `helm upgrade --install` once per
// chart on the same cluster (other namespaces).
const deployCharts = 20

var deployComponents = []string{"base", "platform", "apps"}

// kubeReady is what kubecluster writes to its -ready file.
type kubeReady struct {
	URL           string `json:"url"`
	Kubeconfig    string `json:"kubeconfig"`
	ZdtKubeconfig string `json:"zdtKubeconfig"`
}

// kubeCluster is a running kubecluster.
type kubeCluster struct {
	p *proc
	kubeReady
}

// startCluster starts bin/kubecluster and waits for its ready file.
func (b *bench) startCluster(ctx context.Context) (*kubeCluster, error) {
	bin := filepath.Join(filepath.Dir(b.self), "kubecluster")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("%w (scripts/bench.sh builds it from internal/kubetest/cmd/kubecluster)", err)
	}
	ready := filepath.Join(b.work, "kube-ready.json")
	_ = os.Remove(ready)
	p, err := startProc(ctx, "", filepath.Join(b.logDir, "kubecluster.log"), nil, bin, "-ready", ready)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		raw, err := os.ReadFile(ready)
		if err == nil {
			k := &kubeCluster{p: p}
			if err := json.Unmarshal(raw, &k.kubeReady); err != nil {
				_ = p.Stop()
				return nil, err
			}
			return k, nil
		}
		if exited, werr := p.Exited(); exited {
			return nil, fmt.Errorf("kubecluster exited before it was ready (%v; see logs/kubecluster.log: kube-apiserver and etcd come from scripts/kube-tools.sh)", werr)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			_ = p.Stop()
			return nil, errors.Join(errors.New("kubecluster not ready in 3 minutes"), ctx.Err())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// deployChart is one chart of the deploy bundle.
type deployChart struct{ name, component, dir string }

// writeDeployBundle writes the charts (a ConfigMap and a Secret each,
// nothing that needs a controller to become ready) and the spec.
func writeDeployBundle(dir string) (string, []deployChart, error) {
	type chart struct {
		Name   string `yaml:"name"`
		Source string `yaml:"source"`
	}
	type component struct {
		Name   string  `yaml:"name"`
		Charts []chart `yaml:"charts"`
	}
	comps := make([]component, len(deployComponents))
	var all []deployChart
	for i := range deployCharts {
		ci := i * len(deployComponents) / deployCharts
		name := fmt.Sprintf("svc-%02d", i)
		cdir := filepath.Join(dir, "charts", name)
		files := map[string]string{
			"Chart.yaml":  fmt.Sprintf("apiVersion: v2\nname: %s\nversion: 1.0.0\n", name),
			"values.yaml": fmt.Sprintf("replicas: 1\nlevel: info\nid: %d\n", i),
			"templates/config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-config\ndata:\n" +
				"  level: {{ .Values.level | quote }}\n  id: {{ .Values.id | quote }}\n",
			"templates/secret.yaml": "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {{ .Release.Name }}-secret\nstringData:\n  token: bench-{{ .Values.id }}\n",
		}
		for n, content := range files {
			p := filepath.Join(cdir, n)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				return "", nil, err
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				return "", nil, err
			}
		}
		comps[ci].Name = deployComponents[ci]
		comps[ci].Charts = append(comps[ci].Charts, chart{Name: name, Source: cdir})
		all = append(all, deployChart{name: name, component: deployComponents[ci], dir: cdir})
	}
	spec := map[string]any{
		"apiVersion": "zdt.dev/v1alpha1", "kind": "Bundle",
		"metadata":   map[string]string{"name": "bench-deploy", "version": "1.0.0"},
		"components": comps,
	}
	b, err := yaml.Marshal(spec)
	if err != nil {
		return "", nil, err
	}
	p := filepath.Join(dir, "deploy.yaml")
	return p, all, os.WriteFile(p, b, 0o644)
}

// deployRows are the deploy and redeploy rows. They share one cluster:
// deploy starts a fresh one before each zdt run (untimed), the helm loop
// runs in the same one after it, and redeploy reuses the last.
func (b *bench) deployRows(ctx context.Context) []*Row {
	dir := filepath.Join(b.work, "deploy")
	bundle, root := filepath.Join(dir, "deploy.zdt"), filepath.Join(dir, "root")
	var kc *kubeCluster
	var charts []deployChart
	stopCluster := func() {
		if kc != nil {
			_ = kc.p.Stop()
			kc = nil
		}
	}
	skipSig := b.optional(ctx, []string{"install"}, "--insecure-skip-signature")
	zdtInstall := func(withCluster bool) []string {
		args := append([]string{b.zdt, "install", "--bundle", bundle, "--root", root}, skipSig...)
		if withCluster && kc != nil {
			args = append(args, "--kubeconfig", kc.ZdtKubeconfig, "--timeout", "2m")
		}
		return args
	}
	zdtCmd := func() *Cmd {
		c := &Cmd{Role: RoleZdt, Label: "zdt",
			Display: "zdt install --bundle $WORK/deploy/deploy.zdt --root $WORK/deploy/root --kubeconfig $KUBECONFIG"}
		c.Run = func(ctx context.Context, _ int) (Sample, error) { return b.execProc(ctx, nil, zdtInstall(true)...) }
		return c
	}
	helmLoop := func() *Cmd {
		return &Cmd{Role: RolePeer, Label: "helm", Needs: []string{"helm"},
			Display: fmt.Sprintf("helm upgrade --install NAME $WORK/deploy/charts/NAME --namespace helm-COMPONENT --create-namespace --wait --kubeconfig $KUBECONFIG  (× %d charts, one after the other)", deployCharts),
			Run: func(ctx context.Context, _ int) (Sample, error) {
				if kc == nil {
					return Sample{}, errors.New("no cluster")
				}
				var argvs [][]string
				for _, c := range charts {
					argvs = append(argvs, []string{"helm", "upgrade", "--install", c.name, c.dir, "--namespace", "helm-" + c.component,
						"--create-namespace", "--wait", "--timeout", "2m", "--kubeconfig", kc.Kubeconfig})
				}
				return b.execSeq(ctx, nil, argvs)
			}}
	}
	probes := []Probe{{Args: []string{"install"}, Flags: []string{"--bundle", "--root", "--kubeconfig"}}}

	deployZdt := zdtCmd()
	deployZdt.Before = func(ctx context.Context, _ int) error {
		stopCluster()
		var err error
		if kc, err = b.startCluster(ctx); err != nil {
			return err
		}
		if err := os.RemoveAll(root); err != nil {
			return err
		}
		// The files, registry and binary first, untimed: the timed install
		// then only deploys the charts.
		_, err = b.execProc(ctx, nil, zdtInstall(false)...)
		return err
	}
	return []*Row{
		{
			Name:   "deploy",
			Title:  fmt.Sprintf("deploy: a bundle of %d small charts in %d components into a fresh kube-apiserver + etcd", deployCharts, len(deployComponents)),
			Probes: probes,
			Setup: func(ctx context.Context) error {
				if err := os.RemoveAll(dir); err != nil {
					return err
				}
				spec, cs, err := writeDeployBundle(dir)
				if err != nil {
					return err
				}
				charts = cs
				_, err = b.execProc(ctx, nil, b.zdt, "bundle", "create", "-f", spec, "-o", bundle, "--lock-file", bundle+".lock.yaml")
				return err
			},
			Cmds: []*Cmd{deployZdt, helmLoop()},
			Note: "Before each zdt run (untimed) a fresh control plane starts (internal/kubetest/cmd/kubecluster: etcd and kube-apiserver v1.37.2, no controllers) and the bundle is installed without --kubeconfig (files, registry, binary), " +
				"so the timed `zdt install --kubeconfig` only deploys: CRDs, namespaces, " + fmt.Sprint(deployCharts) + " releases in component order, each waited ready. " +
				"The helm CLI (stock v3) then installs the same chart directories into the same cluster under other namespaces, one `helm upgrade --install --wait` per chart.",
		},
		{
			Name:     "redeploy",
			Title:    fmt.Sprintf("redeploy: the same bundle of %d charts again (nothing changed)", deployCharts),
			Probes:   probes,
			Requires: []string{"deploy"},
			Cmds:     []*Cmd{zdtCmd(), helmLoop()},
			Goals:    []Goal{wallUnder(2), vsFastestPeer(0.1)},
			Teardown: func(context.Context) error { stopCluster(); return os.RemoveAll(dir) },
			Note:     "In the cluster the deploy row's last run left. zdt finds every release unchanged (chart, values and manifest digests, newest revision) and writes nothing; the helm loop creates a new revision of each of its releases every run.",
		},
	}
}
