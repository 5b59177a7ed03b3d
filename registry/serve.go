package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// DefaultAddr is where `zdt serve` listens unless told otherwise: loopback
// only, on the registry port clients expect.
const DefaultAddr = "127.0.0.1:5000"

// ServeOptions configure Serve. TLS is on unless InsecureHTTP: with
// CertFile/KeyFile (site PKI), else with a certificate for Hostnames issued
// by CA and re-issued before it expires.
type ServeOptions struct {
	// Handler serves requests (usually a *Handler).
	Handler http.Handler
	// Addr is HOST:PORT to listen on (default DefaultAddr); Listener, if
	// set, is used instead (Serve closes it).
	Addr     string
	Listener net.Listener
	// CertFile and KeyFile are a PEM certificate chain and key to serve.
	CertFile, KeyFile string
	// CA issues the server certificate when CertFile is empty; its SANs
	// are Hostnames (default DefaultHostnames) and Addr's host
	// (ServerHostnames).
	CA        *CA
	Hostnames []string
	// InsecureHTTP serves plain HTTP.
	InsecureHTTP bool
	// ShutdownTimeout bounds the graceful shutdown once ctx is done
	// (default 30s); requests still running then are cut.
	ShutdownTimeout time.Duration
	// MaxConnections caps the connections served at once (default
	// DefaultMaxConnections); MaxConnectionsPerClient caps those of one
	// client IP address (default DefaultMaxConnectionsPerClient).
	// Connections over a cap are closed as soon as they are accepted;
	// requests in flight are capped alike (HTTP/2 carries many on one
	// connection) and those over a cap get 429 TOOMANYREQUESTS.
	MaxConnections, MaxConnectionsPerClient int
	// WriteTimeout bounds each write to a client (default
	// DefaultWriteTimeout): it is pushed back as a response makes
	// progress, so it drops clients that stop reading without cutting
	// long downloads. ReadTimeout does the same for each read of a
	// request body (default DefaultReadTimeout).
	WriteTimeout, ReadTimeout time.Duration
	// ReadHeaderTimeout bounds the TLS handshake and request headers
	// (default DefaultReadHeaderTimeout); IdleTimeout closes idle
	// keep-alive connections (default DefaultIdleTimeout).
	ReadHeaderTimeout, IdleTimeout time.Duration
	// Ready, if set, is called once with the address being listened on.
	Ready func(addr net.Addr)
	// Logger receives server errors (default: discard).
	Logger *slog.Logger
}

// Serve listens and serves until ctx is done, then shuts down gracefully:
// it stops accepting, lets running requests finish (up to
// ShutdownTimeout) and returns nil. Requests are not cancelled by ctx.
func Serve(ctx context.Context, opts ServeOptions) error {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.ShutdownTimeout <= 0 {
		opts.ShutdownTimeout = 30 * time.Second
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defDur := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt(&opts.MaxConnections, DefaultMaxConnections)
	defInt(&opts.MaxConnectionsPerClient, DefaultMaxConnectionsPerClient)
	defDur(&opts.WriteTimeout, DefaultWriteTimeout)
	defDur(&opts.ReadTimeout, DefaultReadTimeout)
	defDur(&opts.ReadHeaderTimeout, DefaultReadHeaderTimeout)
	defDur(&opts.IdleTimeout, DefaultIdleTimeout)
	var tlsCfg *tls.Config
	switch {
	case opts.InsecureHTTP:
	case opts.CertFile != "" || opts.KeyFile != "":
		pair, err := tls.LoadX509KeyPair(opts.CertFile, opts.KeyFile)
		if err != nil {
			return fmt.Errorf("loading TLS certificate: %w", err)
		}
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{pair}}
	case opts.CA != nil:
		addr := opts.Addr
		if opts.Listener != nil {
			addr = opts.Listener.Addr().String()
		}
		hosts := ServerHostnames(addr, opts.Hostnames)
		rc := &rotatingCert{ca: opts.CA, hostnames: hosts, lifetime: ServerCertLifetime}
		if _, err := rc.get(nil); err != nil {
			return fmt.Errorf("issuing server certificate: %w", err)
		}
		tlsCfg = &tls.Config{GetCertificate: rc.get}
	default:
		return errors.New("serve: no TLS certificate, CA or InsecureHTTP")
	}
	if tlsCfg != nil {
		tlsCfg.MinVersion = tls.VersionTLS12
		tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	}
	ln := opts.Listener
	if ln == nil {
		addr := opts.Addr
		if addr == "" {
			addr = DefaultAddr
		}
		var err error
		if ln, err = (&net.ListenConfig{}).Listen(ctx, "tcp", addr); err != nil {
			return fmt.Errorf("listening on %s: %w", addr, err)
		}
	}
	ln = &connLimiter{Listener: ln, slots: newSlots(opts.MaxConnections, opts.MaxConnectionsPerClient),
		refused: func(remote net.Addr, why string) {
			opts.Logger.Warn("connection refused", "remote", remote.String(), "reason", why)
		}}
	if tlsCfg != nil {
		ln = tls.NewListener(ln, tlsCfg)
	}
	srv := &http.Server{
		Handler: limitRequests(withDeadlines(opts.Handler, opts.WriteTimeout, opts.ReadTimeout),
			newSlots(opts.MaxConnections, opts.MaxConnectionsPerClient)),
		ReadHeaderTimeout: opts.ReadHeaderTimeout,
		IdleTimeout:       opts.IdleTimeout,
		TLSConfig:         tlsCfg,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	if opts.Ready != nil {
		opts.Ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), opts.ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		opts.Logger.Warn("shutdown timed out; closing open connections", "timeout", opts.ShutdownTimeout)
		err = srv.Close()
	}
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
