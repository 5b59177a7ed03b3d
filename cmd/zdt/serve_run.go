package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/registry"
)

// run is `zdt serve`: it returns when ctx is cancelled (after a graceful
// shutdown) or the server fails.
func (o *serveOptions) run(ctx context.Context, g *globals) error {
	if err := o.validate(); err != nil {
		return err
	}
	logger := serveLogger(g)
	if len(o.bundles) == 0 || (!o.insecureHTTP && o.tlsCert == "") {
		// The store, or the local CA, lives under --root: created if
		// missing, as install does.
		if err := os.MkdirAll(o.root, 0o755); err != nil {
			return fmt.Errorf("creating --root %s: %w", o.root, err)
		}
	}
	hopts := registry.HandlerOptions{Htpasswd: o.htpasswd, Logger: logger}
	what := ""
	if len(o.bundles) > 0 {
		for i, p := range o.bundles {
			// A delta's base may be any --base or another --bundle.
			bases := baseOptions{files: append([]string(nil), o.base.files...)}
			for j, q := range o.bundles {
				if j != i {
					bases.files = append(bases.files, q)
				}
			}
			a, _, done, err := g.openBundle(ctx, p, &o.trust, &bases)
			if err != nil {
				return err
			}
			defer done()
			if o.verify {
				if _, err := a.Verify(ctx, bundle.VerifyOptions{}); err != nil {
					return fmt.Errorf("%s: %w", p, err)
				}
			}
			hopts.Archives = append(hopts.Archives, a)
		}
		what = strings.Join(o.bundles, ", ")
	} else {
		store, err := registry.OpenStore(o.root, registry.StoreOptions{Logger: logger})
		if err != nil {
			return err
		}
		defer store.Close()
		hopts.Store, what = store, store.Dir()
	}
	h, err := registry.NewHandler(ctx, hopts)
	if err != nil {
		return err
	}
	defer h.Close()
	sopts := registry.ServeOptions{
		Handler: h, Addr: o.addr, CertFile: o.tlsCert, KeyFile: o.tlsKey,
		Hostnames: o.hostnames, InsecureHTTP: o.insecureHTTP, Logger: logger,
		MaxConnections: o.maxConns, MaxConnectionsPerClient: o.maxConnsPerClient,
		WriteTimeout: o.writeTimeout, ReadTimeout: o.writeTimeout, IdleTimeout: o.idleTimeout,
	}
	caPath := ""
	if !o.insecureHTTP && o.tlsCert == "" {
		ca, err := registry.OpenCA(o.root)
		if err != nil {
			return err
		}
		sopts.CA, caPath = ca, ca.CertPath
	}
	var readyErr error
	sopts.Ready = o.ready(g, h, what, caPath, &readyErr)
	if err := registry.Serve(ctx, sopts); err != nil {
		return err
	}
	return readyErr
}

// serveLogger is the server's logger: a server logs every request, so Info
// level always; JSON lines with --output json.
func serveLogger(g *globals) *slog.Logger {
	if g.json() {
		return slog.New(slog.NewJSONHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// ready is the server's Ready callback: it says where the registry serves
// what (serveOutput with --output json), the CA clients must trust and the
// repositories of h. An error printing JSON goes to *errp.
func (o *serveOptions) ready(g *globals, h *registry.Handler, what, caPath string, errp *error) func(net.Addr) {
	return func(addr net.Addr) {
		scheme := "https"
		if o.insecureHTTP {
			scheme = "http"
		}
		repos := map[string]bool{}
		var list []string
		for _, p := range h.Placements {
			if !repos[p.Repository] {
				repos[p.Repository] = true
				list = append(list, p.Repository)
			}
		}
		if g.json() {
			*errp = g.printJSON(serveOutput{
				URL: scheme + "://" + addr.String(), Serving: what, CA: caPath,
				ReadOnly: o.htpasswd == "", Repositories: list,
			})
			return
		}
		fmt.Fprintf(g.stdout, "serving %s at %s://%s\n", what, scheme, addr)
		if caPath != "" {
			fmt.Fprintf(g.stdout, "clients trust the CA in %s\n", caPath)
		}
		if len(list) > 0 {
			fmt.Fprintf(g.stdout, "repositories: %s\n", strings.Join(list, " "))
		}
		fmt.Fprintf(g.stdout, "files at %s://%s%s\n", scheme, addr, registry.FilesPath)
	}
}
