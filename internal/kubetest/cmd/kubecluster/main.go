// Command kubecluster runs the kubetest control plane (etcd and
// kube-apiserver, see package kubetest) outside `go test`, for the bench:
// it starts one, writes a small JSON file naming its kubeconfigs (-ready
// FILE, written atomically once /readyz answers; also printed on stdout),
// and stays up until it gets SIGINT or SIGTERM (or its stdin closes, with
// -stdin), then stops the control plane and removes its directory.
//
// It is test-only tooling: never part of the zdt binary.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"

	"zdt.dev/zdt/internal/kubetest"
)

// Ready is what -ready FILE holds.
type Ready struct {
	URL string `json:"url"`
	// Kubeconfig is the admin's; ZdtKubeconfig zdt's (both system:masters,
	// told apart in the audit log).
	Kubeconfig    string `json:"kubeconfig"`
	ZdtKubeconfig string `json:"zdtKubeconfig"`
	AuditLog      string `json:"auditLog"`
	StartupMillis int64  `json:"startupMillis"`
	PID           int    `json:"pid"`
}

// tb is the testing.TB kubetest.Start needs, outside a test: Fatalf and
// Skipf stop the process after the cleanups.
type tb struct {
	testing.TB
	dir      string
	cleanups []func()
	n        int
}

func (t *tb) Helper() {}

func (t *tb) Cleanup(f func()) { t.cleanups = append(t.cleanups, f) }

func (t *tb) TempDir() string {
	t.n++
	d := filepath.Join(t.dir, fmt.Sprint(t.n))
	if err := os.MkdirAll(d, 0o700); err != nil {
		t.Fatalf("%v", err)
	}
	return d
}

func (t *tb) Logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func (t *tb) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kubecluster: "+format+"\n", args...)
	t.stop()
	os.Exit(1)
}

func (t *tb) Skipf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "kubecluster: not available: "+format+"\n", args...)
	t.stop()
	os.Exit(3)
}

func (t *tb) stop() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
	os.RemoveAll(t.dir)
}

func main() {
	ready := flag.String("ready", "", "write the kubeconfig paths here (JSON) once the API server is ready")
	stdin := flag.Bool("stdin", false, "also stop when stdin reaches EOF (the parent is gone)")
	flag.Parse()
	dir, err := os.MkdirTemp("", "kubecluster-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubecluster:", err)
		os.Exit(1)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	t := &tb{dir: dir}
	c := kubetest.Start(t)
	r := Ready{URL: c.URL, Kubeconfig: c.Kubeconfig, ZdtKubeconfig: c.ZdtKubeconfig, AuditLog: c.AuditLog,
		StartupMillis: c.StartupTime.Milliseconds(), PID: os.Getpid()}
	b, _ := json.Marshal(r)
	if *ready != "" {
		tmp := *ready + ".tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			t.Fatalf("%v", err)
		}
		if err := os.Rename(tmp, *ready); err != nil {
			t.Fatalf("%v", err)
		}
	}
	fmt.Println(string(b))
	if *stdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			sigs <- syscall.SIGTERM
		}()
	}
	<-sigs
	t.stop()
}
