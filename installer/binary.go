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
	path string
	// digest is "" until the binary is hashed: a first placement (no
	// binary placed yet, so the plan line is an add whatever the digest)
	// hashes it while it copies it, in one read.
	digest digest.Digest
	size   int64
	stat   *Placed // the file when it was hashed
}

// hashBinary hashes the executable at p (outside the root: the running
// zdt). A file that is, by path, inode, size and modification time, the
// one hashed by the last install (last) is not hashed again.
func hashBinary(ctx context.Context, p string, last *binarySourceRecord) (*binarySource, error) {
	src, f, err := openBinary(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if last != nil && last.Path == p && last.Stat != nil && *last.Stat == *src.stat && digest.Digest(last.Digest).Validate() == nil {
		src.digest = digest.Digest(last.Digest)
		return src, nil
	}
	d, n, err := fsutil.CopyVerified(ctx, io.Discard, f, "", -1, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("hashing the zdt binary %s: %w", p, err)
	}
	src.digest, src.size = d, n
	return src, nil
}

// statBinary is hashBinary without the hashing, for a first placement:
// installBinary hashes the binary as it copies it.
func statBinary(p string) (*binarySource, error) {
	src, f, err := openBinary(p)
	if err != nil {
		return nil, err
	}
	f.Close()
	return src, nil
}

// openBinary opens the executable at p, which must be a regular file.
func openBinary(p string) (*binarySource, *os.File, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, nil, fmt.Errorf("zdt binary: %w", err)
	}
	fi, err := f.Stat()
	if err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("zdt binary %s is not a regular file (%v)", p, err)
	}
	return &binarySource{path: p, size: fi.Size(), stat: placedOf(fi)}, f, nil
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
// layout.BinariesDir under its digest. The kept copy is written once,
// fsynced, from the source (its bytes checked against the digest the plan
// saw before it is renamed into place, or hashed as they are copied when
// the plan did not hash them), and BinaryTarget is a hard link to it
// (placeKept). A kept copy already there is used when it still holds that
// digest (re-verified: an edit of BinaryTarget in place is an edit of the
// kept copy too), else written again from the source. It records what it
// placed.
func installBinary(ctx context.Context, root *os.Root, src *binarySource) error {
	source := func() *binarySourceRecord {
		return &binarySourceRecord{Path: src.path, Digest: src.digest.String(), Stat: src.stat}
	}
	if src.digest != "" {
		sp := layout.StoredBinary(src.digest.Encoded())
		kept, err := checkKept(ctx, root, sp, src.digest)
		var mm *fsutil.MismatchError
		switch {
		case err == nil:
			return placeKept(ctx, root, src.digest, kept, source())
		case !errors.Is(err, fs.ErrNotExist) && !errors.As(err, &mm):
			return fmt.Errorf("placing %s: %w", BinaryTarget, err)
		}
	}
	for _, dir := range []string{layout.BinariesDir, path.Dir(layout.Binary)} {
		if err := checkSpace(root, dir, src.size); err != nil {
			return fmt.Errorf("placing %s: %w", BinaryTarget, err)
		}
	}
	kept, err := keepBinary(ctx, root, src)
	if err != nil {
		return fmt.Errorf("placing the zdt binary %s at %s: %w", src.path, BinaryTarget, err)
	}
	return placeKept(ctx, root, src.digest, kept, source())
}

// keepBinary copies src into layout.BinariesDir (temp, fsync, rename),
// hashing it in the same pass: checked against src.digest, or, when the
// plan did not hash it, named by the digest found (src.digest is set).
// It returns the kept file as it was renamed into place.
func keepBinary(ctx context.Context, root *os.Root, src *binarySource) (fs.FileInfo, error) {
	f, err := os.Open(src.path)
	if err != nil {
		return nil, fmt.Errorf("zdt binary: %w", err)
	}
	defer f.Close()
	if err := root.MkdirAll(layout.BinariesDir, 0o755); err != nil {
		return nil, err
	}
	tmp := fsutil.TempName(layout.StoredBinary("zdt"))
	w, err := root.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			w.Close()
			_ = root.Remove(tmp)
		}
	}()
	d, _, err := fsutil.CopyVerified(ctx, w, f, src.digest, src.size, nil, nil)
	if err != nil {
		return nil, err
	}
	if src.digest == "" {
		// Hashed as it was copied: the file must not have moved since the
		// plan looked at it, so that its record names these bytes.
		if fi, err := f.Stat(); err != nil || *placedOf(fi) != *src.stat {
			return nil, fmt.Errorf("%s changed while it was copied; run zdt install again", src.path)
		}
		src.digest = d
	}
	if err := w.Chmod(binaryMode); err != nil {
		return nil, err
	}
	if err := w.Sync(); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	sp := layout.StoredBinary(src.digest.Encoded())
	if err := root.Rename(tmp, sp); err != nil {
		return nil, err
	}
	ok = true
	if err := fsutil.SyncDir(root, layout.BinariesDir); err != nil {
		return nil, err
	}
	return root.Lstat(sp)
}

// checkKept checks the kept binary sp against d by hashing it (what a
// hard link to it places) and returns it as it was hashed; its mode is
// made binaryMode (a version kept before was read-only), which the target
// shares. A missing one is fs.ErrNotExist, other bytes a
// *fsutil.MismatchError.
func checkKept(ctx context.Context, root *os.Root, sp string, d digest.Digest) (fs.FileInfo, error) {
	f, err := root.Open(sp)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("kept zdt binary %s is not a regular file: %w", sp, fs.ErrNotExist)
	}
	if _, _, err := fsutil.CopyVerified(ctx, io.Discard, f, d, fi.Size(), nil, nil); err != nil {
		return nil, err
	}
	if fi.Mode().Perm() != binaryMode {
		if err := f.Chmod(binaryMode); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
	}
	return fi, nil
}

// placeBinary places the kept binary d at BinaryTarget (rollback): the
// kept copy is hashed first and refused when it is not d any more.
func placeBinary(ctx context.Context, root *os.Root, d string, source *binarySourceRecord) error {
	dg, err := digest.Parse(d)
	if err != nil {
		return fmt.Errorf("zdt binary %q: %w", d, err)
	}
	kept, err := checkKept(ctx, root, layout.StoredBinary(dg.Encoded()), dg)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("placing %s: version %s is not kept: %w", BinaryTarget, d, err)
	}
	if err != nil {
		return fmt.Errorf("placing %s: %w", BinaryTarget, err)
	}
	return placeKept(ctx, root, dg, kept, source)
}

// placeKept makes BinaryTarget the kept binary d (kept: the file as it was
// written or verified): a hard link renamed into place, or, where the two
// directories are on different filesystems, a copy checked against d.
// Then it records it. A kept file written to since it was verified is
// refused.
func placeKept(ctx context.Context, root *os.Root, d digest.Digest, kept fs.FileInfo, source *binarySourceRecord) error {
	sp := layout.StoredBinary(d.Encoded())
	if err := root.MkdirAll(path.Dir(layout.Binary), 0o755); err != nil {
		return fmt.Errorf("placing %s: %w", BinaryTarget, err)
	}
	if fi, err := root.Lstat(layout.Binary); err != nil || !os.SameFile(fi, kept) {
		tmp := fsutil.TempName(layout.Binary)
		if err := root.Link(sp, tmp); err != nil {
			return copyKept(ctx, root, d, source)
		}
		if err := root.Rename(tmp, layout.Binary); err != nil {
			_ = root.Remove(tmp)
			return fmt.Errorf("placing %s: %w", BinaryTarget, err)
		}
		if err := fsutil.SyncDir(root, path.Dir(layout.Binary)); err != nil {
			return err
		}
	}
	fi, err := root.Lstat(layout.Binary)
	if err != nil {
		return err
	}
	if !os.SameFile(fi, kept) || fi.Size() != kept.Size() || !fi.ModTime().Equal(kept.ModTime()) {
		return fmt.Errorf("placing %s: the kept binary %s was modified while it was placed; run zdt install again", BinaryTarget, sp)
	}
	return recordBinary(root, d.String(), fi.Size(), source)
}

// copyKept copies the kept binary d to BinaryTarget atomically, checked
// against d as it is copied, and records it.
func copyKept(ctx context.Context, root *os.Root, d digest.Digest, source *binarySourceRecord) error {
	src, err := root.Open(layout.StoredBinary(d.Encoded()))
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
		_, _, err := fsutil.CopyVerified(ctx, w, src, d, fi.Size(), nil, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("placing %s: %w", BinaryTarget, err)
	}
	return recordBinary(root, d.String(), n, source)
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
