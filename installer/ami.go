package installer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
)

// exportAMI writes an AMI item's disk image (decompressed, never past its
// recorded size, digest-checked) and its metadata (NAME.json, the AMI
// config, whose disk size and digest were checked against the image) to
// dir, atomically and sparse (zero blocks are holes), after checking dir's filesystem has room for it. An
// export whose image already has the right content is left alone.
func exportAMI(ctx context.Context, a *bundle.Archive, it ItemState, c bundle.Content, dir string) error {
	if c.AMI == nil {
		return fmt.Errorf("exporting ami %s: no ami config", it.Name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	name := filepath.Base(it.Name) // one path element: checkItems refused others
	img := name + ".img"
	if fi, err := root.Stat(img); err == nil && fi.Size() == c.Size {
		if d, err := hashFile(root, img); err == nil && d == c.Digest {
			return nil
		}
	}
	if err := checkSpace(root, ".", c.Size); err != nil {
		return fmt.Errorf("exporting ami %s: %w", it.Name, err)
	}
	// Sparse: a disk image is mostly zeros, which stay holes.
	if err := writeContentWith(ctx, fsutil.WriteAtomicSparse, root, a, c, img, 0o644); err != nil {
		return fmt.Errorf("exporting ami %s: %w", it.Name, err)
	}
	b, _ := json.MarshalIndent(c.AMI, "", "  ")
	return fsutil.WriteFileAtomic(root, name+".json", b, 0o644)
}
