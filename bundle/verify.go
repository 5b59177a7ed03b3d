package bundle

import (
	"context"
	"fmt"
	"io"
	"runtime"
	"sort"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/errgroup"

	"zdt.dev/zdt/internal/fsutil"
)

// VerifyOptions tune Verify. The zero value is valid.
type VerifyOptions struct {
	// Concurrency is the number of blobs hashed at once (default: GOMAXPROCS).
	Concurrency int
	// Progress, if set, is called with the bytes hashed so far and the total;
	// it may be called from several goroutines at once.
	Progress func(done, total int64)
	// SkipBase leaves out of the hashing the blobs a delta reads from its
	// attached base: for a base that was verified already (an installed
	// bundle). Manifests are read and digest-checked either way.
	SkipBase bool
	// SkipContent only hashes file and disk layers, without decoding them
	// to check their content: for a caller that reads each of them through
	// OpenContent itself (install), which checks the same.
	SkipContent bool
	// SkipBlobs leaves these blobs out of the hashing: for a caller that
	// reads each of them in full through the archive and checks its
	// digest itself (install places a file item through OpenContent, which
	// hashes its layer), and does not rely on Verify for them.
	SkipBlobs map[digest.Digest]bool
}

// VerifyResult says what Verify checked.
type VerifyResult struct {
	Graph *Graph
	// Blobs and Bytes are what was hashed.
	Blobs int
	Bytes int64
}

// Verify checks the whole archive: the structure Open checked, that every
// blob is reachable from the root and present, and every blob's digest,
// hashing blobs in parallel straight from their archive offsets. The first
// failure is returned as a *BlobError or *EntryError naming the blob and the
// item it belongs to; every failure matches ErrVerification.
func (a *Archive) Verify(ctx context.Context, opts VerifyOptions) (VerifyResult, error) {
	g, err := a.Walk(ctx)
	if err != nil {
		return VerifyResult{}, err
	}
	// File and disk layers are decoded too: their content digest and size
	// are checked, bounded, with nothing written.
	var contents map[digest.Digest][]Content
	if !opts.SkipContent {
		if contents, err = a.contents(ctx, g); err != nil {
			return VerifyResult{}, err
		}
	}
	var todo []*blobRef
	var total int64
	for _, r := range g.refs {
		if !r.parsed && (!opts.SkipBase || a.HasLocal(r.desc.Digest)) && !opts.SkipBlobs[r.desc.Digest] {
			todo = append(todo, r)
			total += r.desc.Size
		}
	}
	// The longest work first, so no long one starts last: a layer's work
	// is its bytes plus the bytes it decodes to (a sparse disk image is a
	// small layer that decodes to gigabytes, all hashed on one core).
	work := func(r *blobRef) int64 {
		w := r.desc.Size
		for _, c := range contents[r.desc.Digest] {
			w += min(c.Size, 1<<50) // recorded, so untrusted: only an order
		}
		return w
	}
	sort.SliceStable(todo, func(i, j int) bool { return work(todo[i]) > work(todo[j]) })
	limit := opts.Concurrency
	if limit <= 0 {
		limit = runtime.GOMAXPROCS(0)
	}
	var done atomic.Int64
	eg, ctx := errgroup.WithContext(ctx)
	eg.SetLimit(limit)
	for _, r := range todo {
		eg.Go(func() error {
			progress := func(n int64) {
				d := done.Add(n)
				if opts.Progress != nil {
					opts.Progress(d, total)
				}
			}
			if cs := contents[r.desc.Digest]; len(cs) > 0 {
				return a.verifyContent(ctx, cs, progress)
			}
			sr, err := a.BlobReader(r.desc.Digest)
			if err != nil {
				return &BlobError{Digest: r.desc.Digest, Role: r.role, Item: r.item, Err: ErrMissingBlob}
			}
			got, _, err := fsutil.CopyVerified(ctx, io.Discard, sr, "", -1, nil, progress)
			if err != nil {
				return fmt.Errorf("reading blob %s: %w", r.desc.Digest, err)
			}
			if got != r.desc.Digest {
				return &BlobError{Digest: r.desc.Digest, Role: r.role, Item: r.item, Err: fmt.Errorf("content hashes to %s: %w", got, ErrDigestMismatch)}
			}
			return nil
		})
	}
	if err := eg.Wait(); err != nil {
		return VerifyResult{}, err
	}
	return VerifyResult{Graph: g, Blobs: len(g.refs), Bytes: total}, nil
}
