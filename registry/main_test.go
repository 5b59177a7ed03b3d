package registry

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"syscall"
	"testing"
	"time"

	"zdt.dev/zdt/bundle"
)

// TestMain lets benchmarks run the registry in a process of its own (as
// `zdt serve` runs), so that comparing it with distribution's `registry
// serve` process is fair: ZDT_TEST_SERVE=store|bundle, ZDT_TEST_SERVE_PATH,
// ZDT_TEST_SERVE_ADDR.
func TestMain(m *testing.M) {
	if mode := os.Getenv("ZDT_TEST_SERVE"); mode != "" {
		os.Exit(helperServe(mode, os.Getenv("ZDT_TEST_SERVE_PATH"), os.Getenv("ZDT_TEST_SERVE_ADDR")))
	}
	os.Exit(m.Run())
}

func helperServe(mode, path, addr string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := HandlerOptions{}
	if mode == "bundle" {
		a, err := bundle.Open(ctx, path)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer a.Close()
		opts.Archives = []*bundle.Archive{a}
	} else { // path is an install root
		s, err := OpenStore(path, StoreOptions{})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer s.Close()
		opts.Store = s
	}
	h, err := NewHandler(ctx, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer h.Close()
	if err := Serve(ctx, ServeOptions{Handler: h, Addr: addr, InsecureHTTP: true}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// startServeProcess runs this test binary as a registry server process.
func startServeProcess(t testing.TB, mode, path string) string {
	t.Helper()
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, os.Args[0])
	cmd.Env = append(os.Environ(), "ZDT_TEST_SERVE="+mode, "ZDT_TEST_SERVE_PATH="+path, "ZDT_TEST_SERVE_ADDR="+addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	waitUp(t, "http://"+addr)
	return "http://" + addr
}

func waitUp(t testing.TB, base string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if r, err := http.Get(base + "/v2/"); err == nil {
			r.Body.Close()
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("%s did not come up", base)
}
