package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
)

// BinaryTarget is where install places the zdt executable (Options.Binary)
// that the systemd unit of `zdt serve` runs, as seen on the target.
const BinaryTarget = "/" + layout.Binary

// KindBinary is the kind of the plan line of the zdt binary.
const KindBinary = "binary"

// binaryMode is the mode of the placed binary.
const binaryMode = 0o755

// binarySource is the zdt executable an install places, hashed once.
type binarySource struct {
	path   string
	digest digest.Digest
	size   int64
	stat   *Placed // the file when it was hashed
}

// hashBinary hashes the executable at p (outside the root: the running
// zdt). A file that is, by path, inode, size and modification time, the
// one hashed by the last install (last) is not hashed again.
func hashBinary(ctx context.Context, p string, last *binarySourceRecord) (*binarySource, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, fmt.Errorf("zdt binary: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("zdt binary %s is not a regular file (%v)", p, err)
	}
	stat := placedOf(fi)
	if last != nil && last.Path == p && last.Stat.matches(fi) && digest.Digest(last.Digest).Validate() == nil {
		return &binarySource{path: p, digest: digest.Digest(last.Digest), size: fi.Size(), stat: stat}, nil
	}
	d, n, err := fsutil.CopyVerified(ctx, io.Discard, f, "", -1, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("hashing the zdt binary %s: %w", p, err)
	}
	return &binarySource{path: p, digest: d, size: n, stat: stat}, nil
}

// binaryRecord is layout.BinaryRecord: the zdt binary install placed at
// BinaryTarget, the target as it was right after, and the source it was
// hashed from.
type binaryRecord struct {
	Digest string              `json:"digest"`
	Size   int64               `json:"size"`
	Placed *Placed             `json:"placed"`
	Source *binarySourceRecord `json:"source,omitempty"`
}

// binarySourceRecord is the last zdt binary an install hashed.
type binarySourceRecord struct {
	Path   string  `json:"path"`
	Digest string  `json:"digest"`
	Stat   *Placed `json:"stat"`
}

// readBinaryRecord reads the binary record (zero when there is none).
func readBinaryRecord(root *os.Root) (binaryRecord, error) {
	var rec binaryRecord
	if root == nil {
		return rec, nil
	}
	b, err := root.ReadFile(layout.BinaryRecord)
	if errors.Is(err, fs.ErrNotExist) {
		return rec, nil
	}
	if err != nil {
		return rec, fmt.Errorf("reading %s: %w", layout.BinaryRecord, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("%s is corrupt: %w", layout.BinaryRecord, err)
	}
	return rec, nil
}

// binaryMatches reports whether BinaryTarget holds the binary with digest
// d and size: a target as zdt left it (placed) is not hashed again.
func binaryMatches(root *os.Root, d string, size int64, placed *Placed) (bool, error) {
	if root == nil || d == "" {
		return false, nil
	}
	fi, err := root.Lstat(layout.Binary)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("checking %s: %w", BinaryTarget, err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm() != binaryMode || fi.Size() != size {
		return false, nil
	}
	if placed.matches(fi) {
		return true, nil
	}
	got, err := hashFile(root, layout.Binary)
	if err != nil {
		return false, err
	}
	return got.String() == d, nil
}

// binaryChange is the plan line of the zdt binary: what install does to
// BinaryTarget for src, given what zdt placed there before (rec).
func binaryChange(root *os.Root, src *binarySource, rec binaryRecord) (Change, error) {
	c := Change{Kind: KindBinary, Name: "zdt", Target: BinaryTarget, To: src.digest.String(), Size: src.size, From: rec.Digest}
	switch {
	case rec.Digest == "":
		c.Action = ActionAdd
	case rec.Digest != src.digest.String():
		c.Action = ActionChange
	default:
		ok, err := binaryMatches(root, rec.Digest, rec.Size, rec.Placed)
		if err != nil {
			return c, err
		}
		c.Action = ActionUnchanged
		if !ok {
			c.Action = ActionRepair
		}
	}
	return c, nil
}

// installBinary places src at BinaryTarget and keeps it in
// layout.BinariesDir under its digest: in one pass from the source when
// it is not kept yet (the bytes checked against the digest the plan saw
// before either file is renamed into place), else from the kept version.
// It records what it placed.
func installBinary(ctx context.Context, root *os.Root, src *binarySource) error {
	sp := layout.StoredBinary(src.digest.Encoded())
	source := &binarySourceRecord{Path: src.path, Digest: src.digest.String(), Stat: src.stat}
	if fi, err := root.Lstat(sp); err == nil && fi.Mode().IsRegular() && fi.Size() == src.size {
		return placeBinary(ctx, root, src.digest.String(), source) // checked as it is copied
	}
	for _, dir := range []string{layout.BinariesDir, path.Dir(layout.Binary)} {
		if err := checkSpace(root, dir, src.size); err != nil {
			return fmt.Errorf("placing %s: %w", BinaryTarget, err)
		}
	}
	f, err := os.Open(src.path)
	if err != nil {
		return fmt.Errorf("zdt binary: %w", err)
	}
	defer f.Close()
	// The kept version is renamed into place first, then the target.
	n, err := fsutil.WriteAtomic(ctx, root, layout.Binary, binaryMode, func(target io.Writer) error {
		_, err := fsutil.WriteAtomic(ctx, root, sp, 0o555, func(kept io.Writer) error {
			_, _, err := fsutil.CopyVerified(ctx, io.MultiWriter(kept, target), f, src.digest, src.size, nil, nil)
			return err
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("placing the zdt binary %s at %s: %w", src.path, BinaryTarget, err)
	}
	return recordBinary(root, src.digest.String(), n, source)
}

// placeBinary places the kept binary d at BinaryTarget atomically, its
// bytes checked against d as they are copied, and records it.
func placeBinary(ctx context.Context, root *os.Root, d string, source *binarySourceRecord) error {
	dg, err := digest.Parse(d)
	if err != nil {
		return fmt.Errorf("zdt binary %q: %w", d, err)
	}
	sp := layout.StoredBinary(dg.Encoded())
	src, err := root.Open(sp)
	if err != nil {
		return fmt.Errorf("placing %s: version %s is not kept: %w", BinaryTarget, d, err)
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if err := checkSpace(root, path.Dir(layout.Binary), fi.Size()); err != nil {
		return fmt.Errorf("placing %s: %w", BinaryTarget, err)
	}
	n, err := fsutil.WriteAtomic(ctx, root, layout.Binary, binaryMode, func(w io.Writer) error {
		_, _, err := fsutil.CopyVerified(ctx, w, src, dg, fi.Size(), nil, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("placing %s: %w", BinaryTarget, err)
	}
	return recordBinary(root, d, n, source)
}

// recordBinary records that BinaryTarget now holds binary d of size n
// (and, when known, the source hashed for it).
func recordBinary(root *os.Root, d string, n int64, source *binarySourceRecord) error {
	fi, err := root.Lstat(layout.Binary)
	if err != nil {
		return err
	}
	if source == nil {
		old, err := readBinaryRecord(root)
		if err != nil {
			return err
		}
		source = old.Source
	}
	b, err := json.MarshalIndent(binaryRecord{Digest: d, Size: n, Placed: placedOf(fi), Source: source}, "", "  ")
	if err != nil {
		return err
	}
	return fsutil.WriteFileAtomic(root, layout.BinaryRecord, b, 0o644)
}

// pruneBinaries removes the kept binaries not in keep (digests).
func pruneBinaries(root *os.Root, keep map[string]bool) error {
	f, err := root.Open(layout.BinariesDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	for _, n := range names {
		if len(n) != 64 || strings.Trim(n, "0123456789abcdef") != "" || keep["sha256:"+n] {
			continue
		}
		if err := root.Remove(path.Join(layout.BinariesDir, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing an old zdt binary: %w", err)
		}
	}
	return nil
}

// removeBinary removes BinaryTarget when it is still the binary zdt placed
// there (uninstall of the last bundle); it reports whether it did.
func removeBinary(root *os.Root) (bool, error) {
	rec, err := readBinaryRecord(root)
	if err != nil || rec.Digest == "" {
		return false, err
	}
	ok, err := binaryMatches(root, rec.Digest, rec.Size, rec.Placed)
	if err != nil || !ok {
		return false, err
	}
	if err := root.Remove(layout.Binary); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, fmt.Errorf("removing %s: %w", BinaryTarget, err)
	}
	return true, nil
}

// binaryDrift reports whether the binary zdt placed at BinaryTarget
// changed or went away since.
func binaryDrift(root *os.Root) (bool, error) {
	rec, err := readBinaryRecord(root)
	if err != nil || rec.Digest == "" {
		return false, err
	}
	ok, err := binaryMatches(root, rec.Digest, rec.Size, rec.Placed)
	return !ok, err
}
