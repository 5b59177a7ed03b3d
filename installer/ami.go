package installer

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
)

// exportAMI writes an AMI item's disk image (decompressed, digest-checked)
// and its metadata (NAME.json, the AMI config) to dir, atomically. An
// export whose image already has the right content is left alone.
func exportAMI(ctx context.Context, a *bundle.Archive, it ItemState, layer ocispec.Descriptor, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	name := filepath.Base(it.Name)
	img := name + ".img"
	if fi, err := root.Stat(img); err == nil && fi.Size() == it.FileSize {
		if d, err := hashFile(root, img); err == nil && d.String() == it.FileDigest {
			return nil
		}
	}
	sr, err := a.BlobReader(layer.Digest)
	if err != nil {
		return err
	}
	if _, err := fsutil.WriteAtomic(ctx, root, img, 0o644, func(w io.Writer) error { return decodeLayer(ctx, sr, layer, it.FileDigest, w) }); err != nil {
		return fmt.Errorf("exporting ami %s: %w", it.Name, err)
	}
	meta, err := amiConfig(ctx, a, it)
	if err != nil {
		return err
	}
	b, _ := json.MarshalIndent(meta, "", "  ")
	return fsutil.WriteFileAtomic(root, name+".json", b, 0o644)
}

// amiConfig reads an AMI item's metadata (its manifest's config).
func amiConfig(ctx context.Context, a *bundle.Archive, it ItemState) (*bundle.AMIConfig, error) {
	size, _ := a.BlobSize(digest.Digest(it.Digest))
	b, err := a.ReadSmall(ctx, ocispec.Descriptor{Digest: digest.Digest(it.Digest), Size: size})
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("ami %s: %w", it.Name, err)
	}
	cb, err := a.ReadSmall(ctx, m.Config)
	if err != nil {
		return nil, err
	}
	var cfg bundle.AMIConfig
	if err := json.Unmarshal(cb, &cfg); err != nil {
		return nil, fmt.Errorf("ami %s config: %w", it.Name, err)
	}
	return &cfg, nil
}
