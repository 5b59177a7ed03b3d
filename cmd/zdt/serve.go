package main

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"zdt.dev/zdt/registry"
)

// serveOptions are the flags of `zdt serve`.
type serveOptions struct {
	root         string
	bundles      []string
	addr         string
	hostnames    []string
	tlsCert      string
	tlsKey       string
	insecureHTTP bool
	htpasswd     string
	verify       bool
	// Limits on what clients can make the server hold (see
	// registry.ServeOptions).
	maxConns          int
	maxConnsPerClient int
	writeTimeout      time.Duration
	idleTimeout       time.Duration
	trust             trustOptions
	base              baseOptions
}

func (o *serveOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.root, "root", "/", "install root: serve ROOT/var/lib/zdt/registry; the generated CA lives in ROOT/var/lib/zdt/tls")
	fs.StringArrayVar(&o.bundles, "bundle", nil, "serve this bundle archive read-only, straight from the file (repeatable)")
	fs.StringVar(&o.addr, "addr", registry.DefaultAddr, "HOST:PORT to listen on (use 0.0.0.0:5000 to serve other nodes)")
	fs.StringArrayVar(&o.hostnames, "hostname", nil, "DNS name or IP address clients use to reach this registry (repeatable; default: this host's name, localhost, 127.0.0.1, ::1; the --addr host is always named too)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve this PEM certificate chain (site PKI) instead of one from the local CA")
	fs.StringVar(&o.tlsKey, "tls-key", "", "key of --tls-cert")
	fs.BoolVar(&o.insecureHTTP, "insecure-http", false, "serve plain HTTP (tests and trusted networks only)")
	fs.StringVar(&o.htpasswd, "htpasswd", "", "htpasswd file (bcrypt); its users may push and delete, everyone else can only pull")
	fs.BoolVar(&o.verify, "verify", false, "with --bundle: hash every blob before serving (otherwise clients check digests as they pull)")
	fs.IntVar(&o.maxConns, "max-connections", registry.DefaultMaxConnections, "connections (and requests in flight) served at once; more are closed at once (429 for requests)")
	fs.IntVar(&o.maxConnsPerClient, "max-connections-per-client", registry.DefaultMaxConnectionsPerClient, "connections (and requests in flight) of one client IP address")
	fs.DurationVar(&o.writeTimeout, "write-timeout", registry.DefaultWriteTimeout, "drop a client that reads nothing of a response (or sends nothing of a request body) for this long; downloads that make progress are never cut")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", registry.DefaultIdleTimeout, "close keep-alive connections idle this long")
	o.trust.AddFlags(fs) // with --bundle: checked before the archive is served
	o.base.AddFlags(fs)
}

func (o *serveOptions) validate() error {
	switch {
	case o.htpasswd != "" && len(o.bundles) > 0:
		return usageError{errors.New("--htpasswd needs the installed store: a --bundle is served read-only")}
	case (o.tlsCert == "") != (o.tlsKey == ""):
		return usageError{errors.New("--tls-cert and --tls-key go together")}
	case o.insecureHTTP && o.tlsCert != "":
		return usageError{errors.New("--insecure-http and --tls-cert exclude each other")}
	case o.insecureHTTP && len(o.hostnames) > 0:
		return usageError{errors.New("--hostname names the TLS certificate; it means nothing with --insecure-http")}
	case o.verify && len(o.bundles) == 0:
		return usageError{errors.New("--verify applies to --bundle")}
	case o.maxConns < 1 || o.maxConnsPerClient < 1:
		return usageError{errors.New("--max-connections and --max-connections-per-client must be at least 1")}
	case o.writeTimeout <= 0 || o.idleTimeout <= 0:
		return usageError{errors.New("--write-timeout and --idle-timeout must be positive")}
	}
	if _, _, err := net.SplitHostPort(o.addr); err != nil {
		return usageError{fmt.Errorf("--addr: %w", err)}
	}
	return nil
}

func newServeCmd(g *globals) *cobra.Command {
	o := &serveOptions{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the embedded OCI registry over the installed store or bundle archives",
		Long: `Run the embedded OCI registry (distribution, in-process).

Without --bundle it serves what zdt install put in ROOT/var/lib/zdt/registry:
the bundle archives it kept there (hard links; blobs read at their offsets)
and the blobs it copied, picking up installs and rollbacks as they happen;
with --bundle it serves the archives as they are, without extracting or
copying them (a DVD can be served as-is), after checking each one's signature
against the trust policy (--key, --policy; an unsigned bundle is refused
unless --insecure-skip-signature). A delta bundle needs its base: another
--bundle, or --base (read for the blobs the delta leaves out, not served).

Images are served under their original repository paths: docker.io/library/nginx:1.25
at HOST/library/nginx:1.25 (and HOST/docker.io/library/nginx:1.25), images of
other registries under the registry's name (HOST/quay.io/cilium/cilium:v1.13.1;
a port's colon becomes '_': 127.0.0.1:5101/team/app at HOST/127.0.0.1_5101/team/app),
charts at HOST/charts/NAME:VERSION, files at HOST/files/NAME:BUNDLEVERSION, AMIs
at HOST/amis/NAME:BUNDLEVERSION and the bundle root with its signatures at
HOST/zdt/NAME:VERSION. The referrers API is served for signatures and
attestations.

Files are also served over plain HTTP(S) for hosts with only curl (node
bootstrap): GET /files/NAME is the content of file item NAME of what is
served (installed or --bundle; decompressed when zdt compressed it), with
its sha256 in the Digest, Repr-Digest and X-Checksum-Sha256 headers, HEAD,
If-None-Match and Range; GET /files/ lists them (name, version, size,
sha256, URL; JSON with Accept: application/json). When two served bundles
have a file of the same name, /files/NAME is the highest version and
/files/NAME?version=V another. A response that runs to the end of a file is
checked against its sha256 before the last bytes are sent (a mismatch cuts
the transfer); a range of a compressed file is decoded from its start.
  curl -fO --cacert ca.crt https://HOST:5000/files/NAME

Secure by default: it listens on 127.0.0.1:5000 unless --addr says otherwise,
serves TLS with a certificate issued by a local CA (kept in
ROOT/var/lib/zdt/tls/ca.crt: give it to clients) unless --tls-cert/--tls-key or
--insecure-http, lets anonymous clients only pull, and accepts pushes only from
the users of --htpasswd (the file is read again when it changes: a user
removed from it is refused from the next request on). /healthz answers
"ok"; /metrics is Prometheus.

Anonymous clients can't exhaust it: at most --max-connections connections
(default 1024) and --max-connections-per-client from one IP address (default
64) are served at once, others are closed as soon as they connect (and
requests in flight over the same caps get 429); a client that stops reading
a response, or sending a request body, is dropped after --write-timeout
(default 1m) without progress, while a download that keeps moving is never
cut; idle keep-alive connections close after --idle-timeout (default 2m).
Access logs go to stderr. SIGTERM or Ctrl-C shuts it down gracefully.`,
		Example: `  zdt serve --bundle /media/dvd/platform-1.4.0.zdt --addr 0.0.0.0:5000 --hostname registry.site.local
  zdt serve --root / --htpasswd /etc/zdt/htpasswd
  zdt serve --bundle build/quickstart.zdt --insecure-http --addr 127.0.0.1:5000`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), g)
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}
