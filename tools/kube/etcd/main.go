// Command etcd is a minimal single-member etcd for tests, built from
// go.etcd.io/etcd/server/v3/embed at the version k8s.io/kubernetes pins, so
// the test harness needs no downloaded etcd release.
//
//	etcd --data-dir DIR --listen-client-urls http://127.0.0.1:P1 --listen-peer-urls http://127.0.0.1:P2
//	etcd --data-dir DIR --listen-client-urls https://127.0.0.1:P1 --listen-peer-urls http://127.0.0.1:P2 \
//	     --cert-file etcd.crt --key-file etcd.key --trusted-ca-file etcd-ca.crt --client-cert-auth
//
// With an https client URL it serves TLS with the given certificate and, with
// --client-cert-auth, accepts only clients whose certificate the trusted CA
// signed (the way kubeadm runs etcd). The peer URL is never used (one member).
//
// It serves until SIGINT/SIGTERM or until its parent process dies (stdin is
// closed), so a killed test binary never leaves it running.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "etcd:", err)
		os.Exit(1)
	}
}

func run() error {
	dataDir := flag.String("data-dir", "", "data directory (required)")
	clientURL := flag.String("listen-client-urls", "http://127.0.0.1:2379", "client URL")
	peerURL := flag.String("listen-peer-urls", "http://127.0.0.1:2380", "peer URL")
	watchStdin := flag.Bool("exit-on-stdin-eof", false, "exit when stdin is closed (parent died)")
	certFile := flag.String("cert-file", "", "client-facing TLS certificate (https client URL)")
	keyFile := flag.String("key-file", "", "key of --cert-file")
	caFile := flag.String("trusted-ca-file", "", "CA that signs accepted client certificates")
	clientCertAuth := flag.Bool("client-cert-auth", false, "require a client certificate signed by --trusted-ca-file")
	flag.Parse()
	if *dataDir == "" {
		return fmt.Errorf("--data-dir is required")
	}
	cu, err := url.Parse(*clientURL)
	if err != nil {
		return fmt.Errorf("client url: %w", err)
	}
	pu, err := url.Parse(*peerURL)
	if err != nil {
		return fmt.Errorf("peer url: %w", err)
	}
	cfg := embed.NewConfig()
	cfg.Dir = *dataDir
	cfg.Name = "default"
	cfg.ListenClientUrls = []url.URL{*cu}
	cfg.AdvertiseClientUrls = []url.URL{*cu}
	cfg.ListenPeerUrls = []url.URL{*pu}
	cfg.AdvertisePeerUrls = []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	if cu.Scheme == "https" {
		if *certFile == "" || *keyFile == "" {
			return fmt.Errorf("an https client URL needs --cert-file and --key-file")
		}
		if *clientCertAuth && *caFile == "" {
			return fmt.Errorf("--client-cert-auth needs --trusted-ca-file")
		}
		cfg.ClientTLSInfo = transport.TLSInfo{
			CertFile: *certFile, KeyFile: *keyFile,
			TrustedCAFile: *caFile, ClientCertAuth: *clientCertAuth,
		}
	} else if *certFile != "" || *clientCertAuth {
		return fmt.Errorf("TLS flags need an https client URL")
	}
	cfg.LogLevel = "error"
	cfg.QuotaBackendBytes = 1 << 30
	cfg.UnsafeNoFsync = true // test data only; speeds up every write

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		return fmt.Errorf("not ready after 60s")
	}
	fmt.Fprintln(os.Stderr, "etcd: ready on", cu.String())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *watchStdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			stop()
		}()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-e.Err():
		return err
	}
}
