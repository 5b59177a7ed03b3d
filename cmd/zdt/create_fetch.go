package main

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"

	"zdt.dev/zdt/bundle"
)

// apply turns the fetch flags of `zdt bundle create` into CreateOptions.
func (o *createOptions) apply(opts *bundle.CreateOptions) error {
	opts.DiscoverImages = o.discover
	if !o.noCache {
		dir := o.cacheDir
		if dir == "" {
			var err error
			if dir, err = bundle.DefaultCacheDir(); err != nil {
				return err
			}
		}
		opts.CacheDir = dir
	} else if o.cacheDir != "" {
		return usageError{fmt.Errorf("--no-cache and --cache-dir exclude each other")}
	}
	cfg := &bundle.RegistryConfig{}
	if o.regConfig != "" {
		var err error
		if cfg, err = bundle.LoadRegistryConfig(o.regConfig); err != nil {
			return err
		}
	}
	if cfg.Registries == nil {
		cfg.Registries = map[string]bundle.RegistryHost{}
	}
	for _, kv := range o.regCA {
		host, file, ok := strings.Cut(kv, "=")
		if !ok || host == "" || file == "" {
			return usageError{fmt.Errorf("--registry-ca %q is not HOST=FILE", kv)}
		}
		h := cfg.Registries[host]
		h.CA = file
		cfg.Registries[host] = h
	}
	for _, host := range o.regInsecure {
		h := cfg.Registries[host]
		h.Insecure = true
		cfg.Registries[host] = h
	}
	for _, host := range o.regPlain {
		h := cfg.Registries[host]
		t := true
		h.PlainHTTP = &t
		cfg.Registries[host] = h
	}
	opts.Registries = cfg
	return nil
}

func printDiscovered(g *globals, ds []bundle.DiscoveredImage) {
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
		if !d.Added {
			note = "listed in the spec"
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
		if b.p.bar != nil && phase != bundle.PhaseFetch && phase != bundle.PhaseWrite {
			b.p.bar = progressbar.NewOptions64(-1,
				progressbar.OptionSetWriter(b.g.stderr),
				progressbar.OptionSetDescription(phase),
				progressbar.OptionShowCount(),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish(),
			)
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
