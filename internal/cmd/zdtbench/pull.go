package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
)

// manifestAccept is what a runtime's pull asks for.
const manifestAccept = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, " +
	"application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json"

// PullResult is what `zdtbench pull` writes to -out.
type PullResult struct {
	Clients   int     `json:"clients"`
	Manifests int64   `json:"manifests"`
	Blobs     int64   `json:"blobs"`
	Bytes     int64   `json:"bytes"`
	Seconds   float64 `json:"seconds"`
}

// pullMain is `zdtbench pull`: N clients each pull every image of -list
// (lines REPO@DIGEST) from -addr over plain HTTP, like a runtime does:
// manifests first, then each distinct blob once, -parallel at a time
// (containerd's default is 3). Bytes are counted and discarded, not hashed,
// so the client spends as little of the shared CPU as possible; a short
// blob is an error.
func pullMain(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("pull", flag.ContinueOnError)
	addr := fs.String("addr", "", "registry host:port")
	list := fs.String("list", "", "file of REPO@DIGEST lines")
	clients := fs.Int("clients", 1, "concurrent clients, each pulling the whole list (or one image of it, with -spread)")
	spread := fs.Bool("spread", false, "client k pulls only image k mod len(list), as nodes each pulling their workload's image")
	parallel := fs.Int("parallel", 3, "blobs one client fetches at once")
	prefix := fs.String("prefix", "", "repository prefix put before every REPO (e.g. a mirror namespace)")
	ns := fs.String("ns", "", "value of the ?ns= parameter containerd sends to mirrors (the original registry)")
	out := fs.String("out", "", "write the result as JSON here")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *addr == "" || *list == "" {
		return fmt.Errorf("pull: -addr and -list are required")
	}
	refs, err := readList(*list)
	if err != nil {
		return err
	}
	for i := range refs {
		refs[i][0] = *prefix + refs[i][0]
	}
	start := time.Now()
	var res PullResult
	eg, gctx := errgroup.WithContext(ctx)
	for k := range *clients {
		mine := refs
		if *spread {
			mine = refs[k%len(refs) : k%len(refs)+1]
		}
		eg.Go(func() error {
			c := &puller{
				base: "http://" + *addr, ns: *ns, parallel: *parallel,
				http: &http.Client{Transport: &http.Transport{
					MaxIdleConnsPerHost: *parallel, DisableCompression: true, ForceAttemptHTTP2: false,
				}},
				seen: map[string]bool{},
			}
			defer c.http.CloseIdleConnections()
			if err := c.pull(gctx, mine); err != nil {
				return err
			}
			atomic.AddInt64(&res.Manifests, c.manifests)
			atomic.AddInt64(&res.Blobs, c.blobs)
			atomic.AddInt64(&res.Bytes, c.bytes.Load())
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return err
	}
	res.Clients = *clients
	res.Seconds = time.Since(start).Seconds()
	b, _ := json.Marshal(res)
	if *out != "" {
		return os.WriteFile(*out, b, 0o644)
	}
	_, err = fmt.Println(string(b))
	return err
}

func readList(path string) ([][2]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var refs [][2]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		repo, dg, ok := strings.Cut(line, "@")
		if !ok {
			return nil, fmt.Errorf("%s: %q is not REPO@DIGEST", path, line)
		}
		refs = append(refs, [2]string{repo, dg})
	}
	return refs, sc.Err()
}

type blobTask struct {
	repo, digest string
	size         int64
}

type puller struct {
	base, ns  string
	parallel  int
	http      *http.Client
	mu        sync.Mutex
	seen      map[string]bool
	manifests int64
	blobs     int64
	bytes     atomic.Int64
}

func (p *puller) url(repo, kind, ref string) string {
	u := p.base + "/v2/" + repo + "/" + kind + "/" + ref
	if p.ns != "" {
		u += "?ns=" + url.QueryEscape(p.ns)
	}
	return u
}

func (p *puller) pull(ctx context.Context, refs [][2]string) error {
	var tasks []blobTask
	for _, r := range refs {
		t, err := p.manifest(ctx, r[0], r[1], 0)
		if err != nil {
			return err
		}
		tasks = append(tasks, t...)
	}
	eg, gctx := errgroup.WithContext(ctx)
	eg.SetLimit(p.parallel)
	for _, t := range tasks {
		eg.Go(func() error { return p.blob(gctx, t) })
	}
	return eg.Wait()
}

// manifest fetches a manifest or index and returns the blobs to fetch.
func (p *puller) manifest(ctx context.Context, repo, ref string, depth int) ([]blobTask, error) {
	if depth > 2 {
		return nil, fmt.Errorf("%s@%s: indexes nested too deep", repo, ref)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url(repo, "manifests", ref), nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := p.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	var m struct {
		Manifests []struct {
			Digest string `json:"digest"`
		} `json:"manifests"`
		Config *struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"config"`
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4<<20)).Decode(&m); err != nil {
		return nil, fmt.Errorf("GET %s: %w", req.URL, err)
	}
	p.manifests++
	var tasks []blobTask
	for _, c := range m.Manifests {
		t, err := p.manifest(ctx, repo, c.Digest, depth+1)
		if err != nil {
			return nil, err
		}
		tasks = append(tasks, t...)
	}
	add := func(dg string, size int64) {
		if !p.seen[dg] {
			p.seen[dg] = true
			tasks = append(tasks, blobTask{repo, dg, size})
		}
	}
	if m.Config != nil {
		add(m.Config.Digest, m.Config.Size)
	}
	for _, l := range m.Layers {
		add(l.Digest, l.Size)
	}
	return tasks, nil
}

func (p *puller) blob(ctx context.Context, t blobTask) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.url(t.repo, "blobs", t.digest), nil)
	if err != nil {
		return err
	}
	resp, err := p.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", req.URL, resp.Status)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", req.URL, err)
	}
	if n != t.size {
		return fmt.Errorf("GET %s: %d bytes, want %d", req.URL, n, t.size)
	}
	p.bytes.Add(n)
	p.mu.Lock()
	p.blobs++
	p.mu.Unlock()
	return nil
}
