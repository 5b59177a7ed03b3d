package registry

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/bundle"
)

// stuckDial opens a TCP connection from local address ip with a tiny
// receive window and sends a GET for path: a client that then never reads
// leaves the server blocked in a write once the socket buffers are full.
func stuckDial(t *testing.T, addr, ip, path string) net.Conn {
	t.Helper()
	d := net.Dialer{
		LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)},
		Timeout:   5 * time.Second,
		Control: func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
			}); err != nil {
				return err
			}
			return serr
		},
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	// A refused connection may be closed before the request is written:
	// the read tells.
	fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: registry.test\r\n\r\n", path)
	return c
}

// accepted reads the first byte of the response: a connection the server
// refused is closed at once.
func accepted(t *testing.T, c net.Conn) bool {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	n, err := c.Read(b[:])
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("no answer and not closed: neither served nor refused")
	}
	return n == 1 && b[0] == 'H'
}

func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

func vmRSS() string {
	b, _ := os.ReadFile("/proc/self/status")
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:"))
		}
	}
	return "?"
}

// TestStuckClientsAreCappedAndDropped attacks `zdt serve` the way issue 11
// (defect 4) did: raw TCP clients request an 8 MiB blob and never read.
// Connections over the per-client cap and over the total cap are closed
// at once; the stuck ones cost the server little heap (blob data go out
// in small pooled chunks) and are dropped once a write made no progress
// for WriteTimeout, which gives their slots back; a slow client that
// keeps reading gets the whole blob although the download lasts longer
// than WriteTimeout.
func TestStuckClientsAreCappedAndDropped(t *testing.T) {
	const (
		perClient    = 10
		maxConns     = 40
		writeTimeout = time.Second
	)
	t0 := time.Now()
	tb := buildBundle(t, bundleSpec{noAMI: true, static: true, layerSize: 8 << 20})
	t.Logf("bundle built in %s", time.Since(t0).Round(time.Millisecond))
	var big digest.Digest
	var bigSize int64
	for _, d := range tb.archive.Digests() {
		if n, _ := tb.archive.BlobSize(d); n > bigSize {
			big, bigSize = d, n
		}
	}
	h, err := NewHandler(context.Background(), HandlerOptions{Archives: []*bundle.Archive{tb.archive}})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	repo := findPlacement(t, h.Placements, "library/web", "1.0").Repository
	blobURL := "/v2/" + repo + "/blobs/" + big.String()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Serve(ctx, ServeOptions{Handler: h, Listener: ln, InsecureHTTP: true,
			MaxConnections: maxConns, MaxConnectionsPerClient: perClient,
			WriteTimeout: writeTimeout, ReadHeaderTimeout: 2 * time.Second, IdleTimeout: 2 * time.Second})
	}()
	defer func() {
		cancel()
		t0 := time.Now()
		defer func() { t.Logf("shutdown took %s", time.Since(t0).Round(time.Millisecond)) }()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	// (No waitUp: its keep-alive connection would hold a slot. The
	// listener is open, so connections queue until Serve accepts.)
	base := heapAlloc()
	start := time.Now()
	// 15 clients from each of four addresses: 10 of each are served (40 in
	// all, the total cap), 5 of each refused; a fifth address finds the
	// server full.
	var stuck []net.Conn
	for i, ip := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"} {
		n := 15
		if i == 4 {
			n = 5
		}
		var conns []net.Conn
		for j := 0; j < n; j++ {
			conns = append(conns, stuckDial(t, addr, ip, blobURL))
		}
		got := 0
		for _, c := range conns {
			if accepted(t, c) {
				got++
				stuck = append(stuck, c)
			}
		}
		want := perClient
		if i == 4 {
			want = 0
		}
		if got != want {
			t.Fatalf("%s: %d of %d connections served, want %d", ip, got, n, want)
		}
	}
	held := heapAlloc()
	grew := int64(held) - int64(base)
	t.Logf("%d stuck clients: heap %d KiB → %d KiB (%+d KiB, %d KiB per client), RSS %s, after %s",
		len(stuck), base>>10, held>>10, grew>>10, grew/int64(len(stuck))>>10, vmRSS(), time.Since(start).Round(time.Millisecond))
	// Distribution's blob server held a 4 MiB buffer per stuck client.
	if grew > int64(len(stuck))*256<<10 {
		t.Fatalf("%d stuck clients grew the heap by %d KiB", len(stuck), grew>>10)
	}

	// After WriteTimeout without progress, the server drops them: what
	// they read then ends early.
	time.Sleep(time.Until(start.Add(writeTimeout + 1500*time.Millisecond)))
	drained := make(chan error, len(stuck))
	for i, c := range stuck {
		go func() {
			defer c.Close()
			c.(*net.TCPConn).SetReadBuffer(1 << 20) // drain what the kernels hold faster
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := io.Copy(io.Discard, c)
			var ne net.Error
			switch {
			case errors.As(err, &ne) && ne.Timeout():
				drained <- fmt.Errorf("stuck client %d still connected after %s", i, time.Since(start))
			case n >= bigSize:
				drained <- fmt.Errorf("stuck client %d got the whole blob (%d bytes)", i, n)
			default:
				drained <- nil
			}
		}()
	}
	for range stuck {
		if err := <-drained; err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("stuck clients dropped; checked at %s", time.Since(start).Round(time.Millisecond))
	if after := heapAlloc(); after > base+8<<20 {
		t.Errorf("heap after the stuck clients left: %d KiB, before: %d KiB", after>>10, base>>10)
	}

	// Their slots are free again: a slow client that pauses between reads
	// (never longer than WriteTimeout) gets the whole blob, though the
	// download takes longer than WriteTimeout.
	for j := 0; j < perClient-1; j++ { // the address may fill its cap again
		c := stuckDial(t, addr, "127.0.0.1", "/v2/")
		if !accepted(t, c) {
			t.Fatalf("connection %d refused after the stuck clients were dropped", j)
		}
	}
	resp, err := http.Get("http://" + addr + blobURL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	hs := sha256.New()
	dl := time.Now()
	for {
		n, err := io.CopyN(hs, resp.Body, 2<<20)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("slow download cut after %d bytes, %s: %v", n, time.Since(dl), err)
		}
		time.Sleep(writeTimeout * 3 / 10) // 4 pauses: 1.2 × writeTimeout in all
	}
	if got := digest.NewDigest(digest.SHA256, hs); got != big {
		t.Fatalf("slow download: %s, want %s", got, big)
	}
	t.Logf("slow download took %s", time.Since(dl).Round(time.Millisecond))
	if took := time.Since(dl); took < writeTimeout {
		t.Fatalf("slow download took %s: not longer than WriteTimeout, proves nothing", took)
	}
}

// TestIdleConnectionsAreDropped: a client that connects and sends nothing,
// or only part of its headers, is dropped after ReadHeaderTimeout.
func TestIdleConnectionsAreDropped(t *testing.T) {
	st, _ := testStore(t)
	h, err := NewHandler(context.Background(), HandlerOptions{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Serve(ctx, ServeOptions{Handler: h, Listener: ln, InsecureHTTP: true, ReadHeaderTimeout: 300 * time.Millisecond})
	for _, send := range []string{"", "GET /v2/ HTTP/1.1\r\nHost: x\r\n"} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, send)
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.Copy(io.Discard, c)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("sent %q: still connected after %s", send, time.Since(start))
		}
	}
}

// TestStalledUploadIsDropped: a client that stops sending a request body
// is cut after ReadTimeout without progress, while one that keeps sending
// (pauses shorter than ReadTimeout) is read to the end.
func TestStalledUploadIsDropped(t *testing.T) {
	got := make(chan string, 2)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			got <- "error after " + fmt.Sprint(len(b)) + " bytes"
			return
		}
		got <- fmt.Sprint(len(b), " bytes")
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Serve(ctx, ServeOptions{Handler: h, Listener: ln, InsecureHTTP: true, ReadTimeout: 400 * time.Millisecond})
	send := func(chunks int, pause time.Duration) string {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
		for i := 0; i < chunks; i++ {
			c.Write(make([]byte, 100))
			time.Sleep(pause)
		}
		select {
		case s := <-got:
			return s
		case <-time.After(5 * time.Second):
			t.Fatal("handler still reading 5 s later")
			return ""
		}
	}
	start := time.Now()
	if s := send(3, 0); s != "error after 300 bytes" {
		t.Fatalf("stalled upload: %s", s)
	}
	t.Logf("stalled upload cut after %s", time.Since(start).Round(time.Millisecond))
	if s := send(10, 150*time.Millisecond); s != "1000 bytes" { // 1.5 s in all, > ReadTimeout
		t.Fatalf("slow upload: %s", s)
	}
}

// TestRequestLimit: requests in flight over the per-client cap (HTTP/2
// carries many on one connection) get 429 TOOMANYREQUESTS.
func TestRequestLimit(t *testing.T) {
	release := make(chan struct{})
	inside := make(chan struct{}, 4)
	h := limitRequests(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inside <- struct{}{}
		<-release
	}), newSlots(10, 2))
	done := make(chan int, 3)
	for i := 0; i < 3; i++ {
		go func() {
			rec := &statusRecorder{header: http.Header{}}
			h.ServeHTTP(rec, &http.Request{RemoteAddr: "192.0.2.1:1234", Header: http.Header{}})
			done <- rec.status
		}()
	}
	<-inside
	<-inside
	if st := <-done; st != http.StatusTooManyRequests {
		t.Fatalf("third request in flight: %d, want 429", st)
	}
	rec := &statusRecorder{header: http.Header{}}
	go h.ServeHTTP(rec, &http.Request{RemoteAddr: "192.0.2.2:1234", Header: http.Header{}})
	<-inside // another client is served
	close(release)
}

type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = 200
	}
	return len(b), nil
}
func (s *statusRecorder) WriteHeader(code int) {
	if s.status == 0 {
		s.status = code
	}
}
