package bundle

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/internal/asynchash"
	"zdt.dev/zdt/internal/hashcount"
	"zdt.dev/zdt/manifests"
)

// MaxDecoderWindow is the largest zstd window (and frame) a file or disk
// layer may declare. zdt's encoder uses 8 MiB at most; a larger window is
// refused before anything is allocated for it.
const MaxDecoderWindow = 64 << 20

// Content is what a file or AMI item's only layer decodes to: the bytes
// the spec's sha256 names, which install places or exports.
type Content struct {
	// Item names the item in errors ("file tool").
	Item string
	// Layer is the layer as the item's manifest lists it.
	Layer ocispec.Descriptor
	// Digest and Size are those of the decoded bytes, as the layer's
	// annotations record them.
	Digest digest.Digest
	Size   int64
	// AMI is the item's AMI config (nil for a file); its diskSize and
	// diskDigest were checked against Size and Digest.
	AMI *AMIConfig
}

// Compressed reports whether zdt compressed the layer (zstd).
func (c Content) Compressed() bool { return strings.HasSuffix(c.Layer.MediaType, "+zstd") }

func (c Content) fail(role string, d digest.Digest, err error) error {
	return &BlobError{Digest: d, Role: role, Item: c.Item, Err: err}
}

// ItemContent reads a file or AMI item's manifest, which must have exactly
// one layer, and returns what that layer decodes to. It refuses a layer
// without valid uncompressed digest and size annotations, a layer stored as
// is whose digest or size are not the content's, and an AMI config whose
// diskSize or diskDigest differ from the layer's or whose metadata no valid
// spec gives (AMIConfig.Validate). Every refusal matches
// ErrVerification. Only manifests and configs are read.
func (a *Archive) ItemContent(ctx context.Context, it Item) (Content, error) {
	c := Content{Item: it.String()}
	d := digest.Digest(it.Digest)
	size, _ := a.BlobSize(d)
	b, err := a.ReadSmall(ctx, ocispec.Descriptor{MediaType: it.MediaType, Digest: d, Size: size})
	if err != nil {
		return c, withItem(err, "manifest", c.Item)
	}
	m, err := c.parse(d, b)
	if err != nil {
		return c, err
	}
	if it.Kind == manifests.KindAMI {
		cb, err := a.ReadSmall(ctx, m.Config)
		if err != nil {
			return c, withItem(err, "config", c.Item)
		}
		var cfg AMIConfig
		if err := json.Unmarshal(cb, &cfg); err != nil {
			return c, c.fail("config", m.Config.Digest, fmt.Errorf("parsing the ami config: %v: %w", err, ErrNotBundle))
		}
		if cfg.DiskSize != c.Size || digest.Digest(cfg.DiskDigest) != c.Digest {
			return c, c.fail("config", m.Config.Digest, fmt.Errorf("says the disk is %s (%d bytes), its layer holds %s (%d bytes): %w",
				cfg.DiskDigest, cfg.DiskSize, c.Digest, c.Size, ErrDigestMismatch))
		}
		if err := cfg.Validate(); err != nil {
			return c, c.fail("config", m.Config.Digest, fmt.Errorf("the ami config: %v: %w", err, ErrNotBundle))
		}
		c.AMI = &cfg
	}
	return c, nil
}

// FileContent is ItemContent for a file item whose manifest (digest d,
// bytes b, already checked against d by the caller) was read from
// elsewhere than an archive (a registry store): the same checks of its
// one layer and its annotations. item names it in errors.
func FileContent(item string, d digest.Digest, b []byte) (Content, error) {
	c := Content{Item: item}
	_, err := c.parse(d, b)
	return c, err
}

// parse fills c from the item manifest b (digest d): its one layer and the
// decoded content's digest and size the layer's annotations record.
func (c *Content) parse(d digest.Digest, b []byte) (ocispec.Manifest, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil || len(m.Layers) != 1 {
		return m, c.fail("manifest", d, fmt.Errorf("not a one-layer artifact: %w", ErrNotBundle))
	}
	c.Layer = m.Layers[0]
	ann := c.Layer.Annotations
	c.Digest = digest.Digest(ann[manifests.AnnotationUncompressedDigest])
	if c.Digest == "" && !c.Compressed() {
		c.Digest = c.Layer.Digest
	}
	if c.Digest.Validate() != nil || c.Digest.Algorithm() != digest.SHA256 {
		return m, c.fail("layer", c.Layer.Digest, fmt.Errorf("no valid %s annotation: %w", manifests.AnnotationUncompressedDigest, ErrNotBundle))
	}
	c.Size = c.Layer.Size
	if s, ok := ann[manifests.AnnotationUncompressedSize]; ok {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < 0 {
			return m, c.fail("layer", c.Layer.Digest, fmt.Errorf("%s %q is not a size: %w", manifests.AnnotationUncompressedSize, s, ErrNotBundle))
		}
		c.Size = n
	} else if c.Compressed() {
		return m, c.fail("layer", c.Layer.Digest, fmt.Errorf("no %s annotation: %w", manifests.AnnotationUncompressedSize, ErrNotBundle))
	}
	if !c.Compressed() && (c.Digest != c.Layer.Digest || c.Size != c.Layer.Size) {
		return m, c.fail("layer", c.Layer.Digest, fmt.Errorf("stored as is, but its annotations record %s (%d bytes): %w", c.Digest, c.Size, ErrDigestMismatch))
	}
	return m, nil
}

// withItem names the role and item in a *BlobError that does not.
func withItem(err error, role, item string) error {
	var be *BlobError
	if errors.As(err, &be) && be.Item == "" {
		be.Role, be.Item = role, item
	}
	return err
}

// OpenContent returns a reader of c's decoded bytes, read from the archive
// (or its base). It never yields more than c.Size bytes: content that
// decodes to more is refused as soon as byte c.Size+1 appears, whatever the
// layer's compression ratio. The zstd window is capped at MaxDecoderWindow.
// The layer's digest and the content's digest and size are checked as the
// bytes stream through; the check at the end is returned by the Read that
// would return io.EOF, so a caller that reads to io.EOF before committing
// what it read commits only verified content. Every refusal is a
// *BlobError naming the item and matching ErrVerification (ErrTooLarge,
// ErrDigestMismatch or ErrCorruptContent). The caller closes the reader; it
// is not safe for concurrent use.
func (a *Archive) OpenContent(ctx context.Context, c Content) (io.ReadCloser, error) {
	return a.openContent(ctx, c, nil, false)
}

// DecodeContent is OpenContent over the layer's bytes read from layer
// (a registry store's blob, say), with the same bounds and checks: layer
// must yield c.Layer's bytes, which are hashed and counted against its
// descriptor. The caller closes the reader (not layer).
func DecodeContent(ctx context.Context, c Content, layer io.Reader) (io.ReadCloser, error) {
	return newContentReader(ctx, c, layer, nil, false)
}

func (a *Archive) openContent(ctx context.Context, c Content, progress func(int64), async bool) (*contentReader, error) {
	sr, err := a.BlobReader(c.Layer.Digest)
	if err != nil {
		return nil, c.fail("layer", c.Layer.Digest, fmt.Errorf("%v: %w", err, ErrMissingBlob))
	}
	if sr.Size() != c.Layer.Size {
		return nil, c.fail("layer", c.Layer.Digest, fmt.Errorf("descriptor says %d bytes, archive holds %d: %w", c.Layer.Size, sr.Size(), ErrDigestMismatch))
	}
	return newContentReader(ctx, c, sr, progress, async)
}

// newContentReader decodes c from the layer's bytes read from layer.
// With async (for Verify, whose reads do nothing else), the content is
// hashed in a goroutine of its own, beside the reading, the layer's hash
// and the decoding: two streams of about equal work for two cores. (A third
// goroutine for the layer's read and hash was tried: no faster on two idle
// cores, and slower on a loaded machine, where every hand-off waits for a
// core.)
func newContentReader(ctx context.Context, c Content, layer io.Reader, progress func(int64), async bool) (*contentReader, error) {
	r := &contentReader{ctx: ctx, c: c, lh: hashcount.SHA256()}
	r.src = &layerReader{r: layer, h: r.lh, progress: progress}
	if !c.Compressed() {
		r.out = r.src // the layer's bytes are the content: one hash checks both
		return r, nil
	}
	r.ch = hashcount.SHA256()
	if async {
		r.ach = asynchash.New(r.ch)
	}
	// The decoder's own checksum (xxhash64 of the content) is not checked:
	// the content's sha256 is, at the end, over the same bytes.
	var err error
	r.dec, err = zstd.NewReader(r.src, zstd.WithDecoderConcurrency(1), zstd.IgnoreChecksum(true),
		zstd.WithDecoderMaxWindow(MaxDecoderWindow), zstd.WithDecoderMaxMemory(MaxDecoderWindow))
	if err != nil {
		return nil, err
	}
	r.out = r.dec
	return r, nil
}

// layerReader hashes and counts the layer's bytes as they are read and
// keeps its own read error apart from the decoder's.
type layerReader struct {
	r        io.Reader
	h        hash.Hash
	n        int64
	err      error
	progress func(int64)
}

func (l *layerReader) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	if n > 0 {
		l.h.Write(p[:n])
		l.n += int64(n)
		if l.progress != nil {
			l.progress(int64(n))
		}
	}
	if err != nil && err != io.EOF {
		l.err = err
	}
	return n, err
}

type contentReader struct {
	ctx context.Context
	c   Content
	src *layerReader
	lh  hash.Hash       // of the layer
	ch  hash.Hash       // of the content; nil when the layer is the content
	ach *asynchash.Hash // feeds ch from a goroutine; nil when ch is fed here
	dec *zstd.Decoder   // nil when stored as is
	out io.Reader       // dec, or src
	n   int64           // content bytes read
	err error           // sticky: the final result once set
}

func (r *contentReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.next(p)
	switch {
	case r.ach != nil:
		r.ach.Write(p[:n])
	case r.ch != nil:
		r.ch.Write(p[:n])
	}
	if err == io.EOF {
		r.err = r.finish()
		return n, r.err
	}
	return n, err
}

// next reads content into p without hashing it: never more than one byte
// past the recorded size, every failure kept in r.err. io.EOF (not kept)
// says the content ended, which the caller checks with finish.
func (r *contentReader) next(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if len(p) == 0 {
		return 0, nil
	}
	// Never ask for more than one byte past the recorded size.
	if left := r.c.Size + 1 - r.n; int64(len(p)) > left {
		p = p[:left]
	}
	n, err := r.out.Read(p)
	r.n += int64(n)
	if r.n > r.c.Size {
		r.err = r.c.fail("layer", r.c.Layer.Digest, fmt.Errorf("content is larger than its recorded %d bytes: %w", r.c.Size, ErrTooLarge))
		return 0, r.err
	}
	switch {
	case err == nil || err == io.EOF:
		return n, err
	case r.src.err != nil:
		r.err = fmt.Errorf("reading %s of %s: %w", r.c.Layer.Digest, r.c.Item, r.src.err) // the archive's I/O, not the data
	default:
		r.err = r.c.fail("layer", r.c.Layer.Digest, fmt.Errorf("%v: %w", err, ErrCorruptContent))
	}
	return n, r.err
}

// discard reads the content to its end as Read does, handing each chunk
// to the content's hasher instead of copying it there (Verify).
func (r *contentReader) discard() error {
	if r.ach == nil {
		buf := make([]byte, asynchash.Chunk)
		var err error
		for err == nil {
			_, err = r.Read(buf)
		}
		if err == io.EOF {
			return nil
		}
		return err
	}
	for r.err == nil {
		b := r.ach.Buffer()
		n, err := r.next(b)
		r.ach.Hand(b[:n])
		if err == io.EOF {
			r.err = r.finish()
		} else if err != nil && r.err == nil {
			r.err = err // the context's
		}
	}
	if r.err == io.EOF {
		return nil
	}
	return r.err
}

// finish checks, at the end of the content, the layer's bytes after the
// compressed stream (none allowed but what the digest covers), the size
// and both digests. It returns io.EOF when all hold.
func (r *contentReader) finish() error {
	if r.dec != nil {
		// The layer's digest covers every byte, whatever the decoder left.
		if _, err := io.Copy(io.Discard, r.src); err != nil {
			return fmt.Errorf("reading %s of %s: %w", r.c.Layer.Digest, r.c.Item, err)
		}
	}
	if r.src.n != r.c.Layer.Size {
		return r.c.fail("layer", r.c.Layer.Digest, fmt.Errorf("%d bytes read, descriptor says %d: %w", r.src.n, r.c.Layer.Size, ErrTruncated))
	}
	if ld := digest.NewDigest(digest.SHA256, r.lh); ld != r.c.Layer.Digest {
		return r.c.fail("layer", r.c.Layer.Digest, fmt.Errorf("content hashes to %s: %w", ld, ErrDigestMismatch))
	}
	if r.n != r.c.Size {
		return r.c.fail("layer", r.c.Layer.Digest, fmt.Errorf("content is %d bytes, %d recorded: %w", r.n, r.c.Size, ErrDigestMismatch))
	}
	if r.ach != nil {
		r.ach.Wait()
	}
	ch := r.ch
	if ch == nil { // stored as is: the layer's hash is the content's
		ch = r.lh
	}
	cd := digest.NewDigest(digest.SHA256, ch)
	if cd != r.c.Digest {
		return r.c.fail("layer", r.c.Layer.Digest, fmt.Errorf("decoded content hashes to %s, recorded %s: %w", cd, r.c.Digest, ErrDigestMismatch))
	}
	return io.EOF
}

// Close releases the decoder and ends the hasher's goroutine.
func (r *contentReader) Close() error {
	if r.dec != nil {
		r.dec.Close()
	}
	if r.ach != nil {
		r.ach.Wait()
	}
	if r.err == nil {
		r.err = errors.New("content reader closed")
	}
	return nil
}

// CheckContent reads a layer from layer to its end and checks it the way
// Verify does: its size and digest are c.Layer's, and it decodes to c's
// content (size and digest), bounded as OpenContent is; nothing is kept.
// Reading, hashing and decoding the layer run beside hashing the content
// (two goroutines, at most 4 MiB of buffers besides the decoder's window).
// Every refusal is a *BlobError naming c.Item and matching ErrVerification.
func CheckContent(ctx context.Context, c Content, layer io.Reader) error {
	r, err := newContentReader(ctx, c, layer, nil, true)
	if err != nil {
		return c.fail("layer", c.Layer.Digest, fmt.Errorf("%v: %w", err, ErrCorruptContent))
	}
	defer r.Close()
	return r.discard()
}

// verifyContent reads a layer that is some items' content through
// OpenContent, checking the layer's digest and each item's decoded content
// (streaming, nothing written). It reports layer bytes to progress (once).
func (a *Archive) verifyContent(ctx context.Context, cs []Content, progress func(int64)) error {
	for i, c := range cs {
		if i > 0 {
			progress = nil
		}
		r, err := a.openContent(ctx, c, progress, true)
		if err != nil {
			return err
		}
		err = r.discard()
		r.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// contents lists, by layer digest, the content of every file and AMI item
// of g, so Verify decodes those layers instead of only hashing them.
func (a *Archive) contents(ctx context.Context, g *Graph) (map[digest.Digest][]Content, error) {
	out := map[digest.Digest][]Content{}
	for _, it := range g.Items {
		if it.Kind != manifests.KindFile && it.Kind != manifests.KindAMI {
			continue
		}
		c, err := a.ItemContent(ctx, it)
		if err != nil {
			return nil, err
		}
		out[c.Layer.Digest] = append(out[c.Layer.Digest], c)
	}
	return out, nil
}
