package build

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
)

// The persistent cache (CreateOptions.CacheDir) is the create pipeline's
// blob store kept between runs: DIR/blobs/sha256/<hex>, shared by every
// create on the machine. Its invariants:
//
//   - a blob appears under its digest only after its bytes were hashed
//     (temp file → check → rename), so a killed create leaves at most a temp
//     file (blobs/.zdt-tmp-ingest-*, fsutil.TempName), which a later create
//     removes once it is stale;
//     blobs are not synced by the create that writes them: the journal names
//     the boot, and a later create syncs them, or re-hashes them after a
//     machine crash (store.go, settle);
//   - a manifest appears only after every blob it points at (post-order
//     commit), so a manifest in the cache stands for its whole graph;
//   - DIR/sources/sha256/<hex>.json maps the sha256 of a file's original
//     bytes (the spec's sha256) to the blob zdt stored for it, so a file
//     whose blob is cached is not downloaded again.

// staleIngest is how old a temp file no running create holds (see
// tryLock) must be before it is removed: the moment between its creation
// and its lock.
const staleIngest = time.Minute

// ingestName is the name temp files of blobs being staged are made from
// (fsutil.TempName: fsutil.TempPrefix, then this, then a random suffix).
const ingestName = "ingest"

// legacyIngestPrefix started temp file names in caches written before
// zdt used fsutil.TempPrefix everywhere; cleanStale removes those too.
const legacyIngestPrefix = ".ingest-"

// DefaultCacheDir is the cache `zdt bundle create` uses unless told
// otherwise: $XDG_CACHE_HOME/zdt (~/.cache/zdt on Linux).
func DefaultCacheDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding the user cache dir: %w", err)
	}
	return filepath.Join(d, "zdt"), nil
}

// cleanStale removes what killed creates left: temp files no running
// create holds (older than olderThan), and partials no running create
// holds that were last written stalePartial ago or have no identity
// record. It returns how many files it removed. Errors are ignored: a
// temp file or partial is never mistaken for a blob.
func (s *blobStore) cleanStale(olderThan time.Duration) int {
	n := 0
	if ents, err := s.readDir("blobs"); err == nil {
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), fsutil.TempPrefix+ingestName) && !strings.HasPrefix(e.Name(), legacyIngestPrefix) {
				continue
			}
			if s.removeUnheld(path.Join("blobs", e.Name()), olderThan) {
				n++
			}
		}
	}
	ents, err := s.readDir(dirPartial)
	if err != nil {
		return n
	}
	data := map[string]bool{}
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			data[e.Name()] = true
		}
	}
	for _, e := range ents {
		p := path.Join(dirPartial, e.Name())
		if hex, ok := strings.CutSuffix(e.Name(), ".json"); ok {
			if !data[hex] && s.removeUnheld(p, olderThan) { // a record without its partial
				n++
			}
			continue
		}
		age := stalePartial
		if _, err := s.root.Stat(p + ".json"); err != nil {
			age = olderThan // no identity: nothing can resume it
		}
		if s.removeUnheld(p, age) {
			_ = s.root.Remove(p + ".json")
			n++
		}
	}
	return n
}

// removeUnheld removes a temp file or partial unless a running create
// holds it (flock) or it was written less than olderThan ago.
func (s *blobStore) removeUnheld(p string, olderThan time.Duration) bool {
	fi, err := s.root.Lstat(p)
	if err != nil || time.Since(fi.ModTime()) < olderThan {
		return false
	}
	if fi.Mode().IsRegular() {
		f, err := s.root.OpenFile(p, os.O_RDONLY, 0)
		if err != nil {
			return false
		}
		defer f.Close()
		if ok, err := tryLock(f, syscall.LOCK_EX); err != nil || !ok {
			return false
		}
	}
	return s.root.Remove(p) == nil
}

// stat describes a stored blob by digest (no media type).
func (s *blobStore) stat(d digest.Digest) (ocispec.Descriptor, bool) {
	p, err := s.path(d)
	if err != nil {
		return ocispec.Descriptor{}, false
	}
	fi, err := s.root.Stat(p)
	if err != nil || !fi.Mode().IsRegular() {
		return ocispec.Descriptor{}, false
	}
	return ocispec.Descriptor{Digest: d, Size: fi.Size()}, true
}

// describe returns the descriptor of a stored manifest or index (media
// type read from the manifest), or false if the store lacks it.
func (s *blobStore) describe(ctx context.Context, d digest.Digest) (ocispec.Descriptor, bool) {
	desc, ok := s.stat(d)
	if !ok || desc.Size > bundle.MaxManifestSize {
		return ocispec.Descriptor{}, false
	}
	rc, err := s.Fetch(ctx, desc)
	if err != nil {
		return ocispec.Descriptor{}, false
	}
	defer rc.Close()
	var m struct {
		MediaType    string `json:"mediaType"`
		ArtifactType string `json:"artifactType"`
		Manifests    []any  `json:"manifests"`
	}
	if err := json.NewDecoder(rc).Decode(&m); err != nil {
		return ocispec.Descriptor{}, false
	}
	if m.MediaType == "" {
		if m.Manifests != nil {
			m.MediaType = ocispec.MediaTypeImageIndex
		} else {
			m.MediaType = ocispec.MediaTypeImageManifest
		}
	}
	if !bundle.IsManifest(m.MediaType) {
		return ocispec.Descriptor{}, false
	}
	desc.MediaType, desc.ArtifactType = m.MediaType, m.ArtifactType
	return desc, true
}

// sourceEntry is what the store keeps about a file source.
type sourceEntry struct {
	Layer ocispec.Descriptor `json:"layer"`
	Size  int64              `json:"size"`
	Head  []byte             `json:"head"`
}

// sourcePath names the record of a source's bytes stored as mediaType.
func (s *blobStore) sourcePath(rawSHA, mediaType string) (string, error) {
	d := digest.NewDigestFromEncoded(digest.SHA256, rawSHA)
	if err := d.Validate(); err != nil {
		return "", err
	}
	mt := digest.FromString(mediaType).Encoded()[:16]
	return path.Join("sources", "sha256", rawSHA+"-"+mt+".json"), nil
}

// maxRecordSize bounds a cache record (a source record, a partial's
// identity) read back: the cache is as hostile as its writers.
const maxRecordSize = 1 << 20

// lookupSource returns the stored layer for a source's original sha256 if
// both the record and the blob are present.
func (s *blobStore) lookupSource(ctx context.Context, rawSHA, mediaType string) (sourceEntry, bool) {
	p, err := s.sourcePath(rawSHA, mediaType)
	if err != nil {
		return sourceEntry{}, false
	}
	b, err := fsutil.ReadFileIn(s.root, p, maxRecordSize)
	if err != nil {
		return sourceEntry{}, false
	}
	var e sourceEntry
	if json.Unmarshal(b, &e) != nil {
		return sourceEntry{}, false
	}
	if ok, _ := s.Exists(ctx, e.Layer); !ok {
		return sourceEntry{}, false
	}
	if !s.sourceMatches(ctx, e, rawSHA, mediaType) {
		_ = s.root.Remove(p) // a wrong record costs one download
		return sourceEntry{}, false
	}
	return e, true
}

// sourceMatches checks that a record's layer holds the source's bytes.
// The record, like every cache file, may have been planted or changed
// since it was written (#17): it is only a hint of where the bytes may be.
//
// A layer stored as is must be named by the source's sha256; its bytes
// are checked against that name when the archive is written, like every
// other cached blob. A zstd layer is read once: its digest is checked and
// its content decoded (bounded: the record's size, a 64 MiB window) and
// hashed against the source's sha256 in the same pass. The layer then
// counts as fresh, so the archive's pass does not hash it a second time;
// that is the trust store.verify gives a blob it hashed, no weaker.
//
// The decoding cannot be skipped by binding the content digest to the blob
// when the record is written: whatever binds them (the record itself, a
// digest beside it, a MAC) is written into a directory the attacker can
// write, with a key the same user could read, so a planted record would
// carry a planted binding. Only decoding the blob shows what it holds.
func (s *blobStore) sourceMatches(ctx context.Context, e sourceEntry, rawSHA, zstdType string) bool {
	if e.Layer.MediaType != zstdType {
		return e.Layer.Digest.Encoded() == rawSHA
	}
	rc, err := s.Fetch(ctx, e.Layer)
	if err != nil {
		return false
	}
	defer rc.Close()
	c := bundle.Content{Item: "cached source sha256:" + rawSHA, Layer: e.Layer,
		Digest: digest.NewDigestFromEncoded(digest.SHA256, rawSHA), Size: e.Size}
	if !c.Compressed() || bundle.CheckContent(ctx, c, rc) != nil {
		return false
	}
	s.fresh.Store(e.Layer.Digest, true)
	return true
}

// recordSource remembers which blob holds a source's bytes. The record is
// written after the blob (temp + fsync + rename); failures only cost a
// future download.
func (s *blobStore) recordSource(rawSHA, mediaType string, e sourceEntry) error {
	p, err := s.sourcePath(rawSHA, mediaType)
	if err != nil {
		return err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(s.root, p, b, 0o644)
}
