package main

import (
	"fmt"
	"github.com/spf13/pflag"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/charts"
	"zdt.dev/zdt/remote"
)

// fetchLimits are the flags that bound what untrusted upstreams can make
// `zdt bundle create` do.
type fetchLimits struct {
	allowChartRepos     []string
	requireChartDigests bool
	maxChartIndexSize   int64
	maxDiskSize         int64
	stallTimeout        time.Duration
	renderTimeout       time.Duration
}

func (o *fetchLimits) AddFlags(fs *pflag.FlagSet) {
	fs.StringArrayVar(&o.allowChartRepos, "allow-chart-repo", nil, "HOST[:PORT] (or http://HOST[:PORT] for plain http) chart dependencies may also be fetched from; by default only the hosts of the spec's chart sources (repeatable)")
	fs.BoolVar(&o.requireChartDigests, "require-chart-digests", false, "refuse a chart whose Helm repository index entry has no digest (default: warn and download it unchecked)")
	fs.Int64Var(&o.maxChartIndexSize, "max-chart-index-size", charts.DefaultMaxChartIndexSize, "largest Helm repository index.yaml read, in bytes")
	fs.Int64Var(&o.maxDiskSize, "max-disk-size", build.DefaultMaxDiskSize, "largest virtual size of an AMI's disk image (raw, qcow2, vmdk, vhd), in bytes")
	fs.DurationVar(&o.stallTimeout, "stall-timeout", remote.DefaultStallTimeout, "fail a request (after retries) that gets no answer, or less than 1 KiB, in this long")
	fs.DurationVar(&o.renderTimeout, "render-timeout", charts.DefaultRenderTimeout, "longest a chart may take to render during --discover-images")
}

// apply turns the fetch flags of `zdt bundle create` into CreateOptions.
func (o *createOptions) apply(opts *build.CreateOptions) error {
	opts.DiscoverImages = o.discover
	opts.AllowChartRepos = o.fetch.allowChartRepos
	opts.RequireChartDigests = o.fetch.requireChartDigests
	opts.MaxChartIndexSize = o.fetch.maxChartIndexSize
	opts.MaxDiskSize = o.fetch.maxDiskSize
	opts.StallTimeout = o.fetch.stallTimeout
	opts.RenderTimeout = o.fetch.renderTimeout
	if !o.noCache {
		dir := o.cacheDir
		if dir == "" {
			var err error
			if dir, err = build.DefaultCacheDir(); err != nil {
				return err
			}
		}
		opts.CacheDir = dir
	} else if o.cacheDir != "" {
		return usageError{fmt.Errorf("--no-cache and --cache-dir exclude each other")}
	}
	cfg, err := o.reg.config()
	if err != nil {
		return err
	}
	opts.Registries = cfg
	return nil
}

func printDiscovered(g *globals, ds []build.DiscoveredImage) {
	added := 0
	for _, d := range ds {
		if d.Added {
			added++
		}
	}
	if len(ds) == 0 {
		return
	}
	fmt.Fprintf(g.stdout, "images  %d found in charts, %d added:\n", len(ds), added)
	for _, d := range ds {
		note := "added"
		switch {
		case d.Excluded:
			note = "excluded by the chart"
		case !d.Added:
			note = "listed in the spec"
		case d.FetchFrom != "":
			note = "added, fetched from " + d.FetchFrom
		}
		fmt.Fprintf(g.stdout, "        %s/%s  %s  (%s)\n", d.Component, d.Chart, d.Ref, note)
	}
}

// phaseBars renders CreateOptions.PhaseProgress: one bar per phase on a
// terminal (bytes and rate for byte phases, counts otherwise), JSON lines
// with --output json. Safe for concurrent use.
type phaseBars struct {
	g   *globals
	mu  sync.Mutex
	cur string
	p   *progress
}

func (g *globals) phaseBars() *phaseBars { return &phaseBars{g: g} }

func (b *phaseBars) update(phase string, done, total int64) {
	b.mu.Lock()
	if phase != b.cur {
		if b.p != nil {
			b.p.finish()
		}
		b.cur = phase
		b.p = b.g.progress(phase)
		if b.p.bar != nil && phase != build.PhaseFetch && phase != build.PhaseWrite {
			b.p.bar = progressbar.NewOptions64(-1,
				progressbar.OptionSetWriter(b.g.stderr),
				progressbar.OptionSetDescription(phase),
				progressbar.OptionShowCount(),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish(),
			)
			b.p.bytes = false
		}
	}
	p := b.p
	b.mu.Unlock()
	p.update(done, total)
}

func (b *phaseBars) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.p != nil {
		b.p.finish()
	}
}

// registryOptions are the flags that say how to reach registries (create
// fetches from them, push writes to them).
type registryOptions struct {
	file     string
	ca       []string
	insecure []string
	plain    []string
}

func (o *registryOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.file, "registry-config", "", "YAML file of per-registry settings: CA, insecure, plain HTTP, credentials (see zdt bundle create --help)")
	fs.StringArrayVar(&o.ca, "registry-ca", nil, "HOST[:PORT]=FILE: trust the PEM certificates in FILE for that registry (repeatable)")
	fs.StringArrayVar(&o.insecure, "insecure-registry", nil, "HOST[:PORT]: speak HTTPS to that registry without verifying its certificate (repeatable)")
	fs.StringArrayVar(&o.plain, "plain-http-registry", nil, "HOST[:PORT]: speak plain HTTP to that registry (repeatable; loopback hosts default to it)")
}

// config merges the --registry-config file with the per-host flags.
func (o *registryOptions) config() (*remote.RegistryConfig, error) {
	cfg := &remote.RegistryConfig{}
	if o.file != "" {
		var err error
		if cfg, err = remote.LoadRegistryConfig(o.file); err != nil {
			return nil, err
		}
	}
	if cfg.Registries == nil {
		cfg.Registries = map[string]remote.RegistryHost{}
	}
	for _, kv := range o.ca {
		host, file, ok := strings.Cut(kv, "=")
		if !ok || host == "" || file == "" {
			return nil, usageError{fmt.Errorf("--registry-ca %q is not HOST=FILE", kv)}
		}
		h := cfg.Registries[host]
		h.CA = file
		cfg.Registries[host] = h
	}
	for _, host := range o.insecure {
		h := cfg.Registries[host]
		h.Insecure = true
		cfg.Registries[host] = h
	}
	for _, host := range o.plain {
		h := cfg.Registries[host]
		t := true
		h.PlainHTTP = &t
		cfg.Registries[host] = h
	}
	return cfg, nil
}
