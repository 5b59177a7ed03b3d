package installer

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
)

// exportAMI writes an AMI item's disk image (decompressed, never past its
// recorded size, digest-checked) as NAME.img, its metadata (NAME.json, the
// AMI config, whose disk size and digest were checked against the image)
// and NAME.import-image.json (ImportImageRequest) to dir, atomically and
// sparse (zero blocks are holes), after checking dir's filesystem has room
// for it. An export whose image already has the right content is not
// written again.
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
	if !exported(root, img, c) {
		if err := checkSpace(root, ".", c.Size); err != nil {
			return fmt.Errorf("exporting ami %s: %w", it.Name, err)
		}
		// Sparse: a disk image is mostly zeros, which stay holes.
		if err := writeContentWith(ctx, fsutil.WriteAtomicSparse, root, a, c, img, 0o644); err != nil {
			return fmt.Errorf("exporting ami %s: %w", it.Name, err)
		}
	}
	b, _ := json.MarshalIndent(c.AMI, "", "  ")
	if err := fsutil.WriteFileAtomic(root, name+".json", b, 0o644); err != nil {
		return err
	}
	b, _ = json.MarshalIndent(ImportImageRequest(c.AMI, img), "", "  ")
	return fsutil.WriteFileAtomic(root, name+".import-image.json", append(b, '\n'), 0o644)
}

// exported says whether dir holds the image with c's content already.
func exported(root *os.Root, img string, c bundle.Content) bool {
	fi, err := root.Stat(img)
	if err != nil || fi.Size() != c.Size {
		return false
	}
	d, err := hashFile(root, img)
	return err == nil && d == c.Digest
}

// ImportImage is EC2's ImportImage request in the shape
// `aws ec2 import-image --cli-input-json file://NAME.import-image.json`
// reads, for clouds without the EBS direct APIs: the exported raw disk as
// the one disk container (S3Bucket is left for the user to fill in, once
// the image is uploaded there under S3Key), with the AMI's architecture,
// boot mode, description and tags.
type ImportImage struct {
	Description       string                   `json:"Description,omitempty"`
	Architecture      string                   `json:"Architecture,omitempty"`
	BootMode          string                   `json:"BootMode,omitempty"`
	Platform          string                   `json:"Platform"`
	DiskContainers    []ImportDiskContainer    `json:"DiskContainers"`
	TagSpecifications []ImportTagSpecification `json:"TagSpecifications,omitempty"`
}

// ImportDiskContainer is one disk of an ImportImage (or ImportSnapshot's
// DiskContainer).
type ImportDiskContainer struct {
	Description string `json:"Description,omitempty"`
	// Format is the exported file's: raw (bundles made before #16 may
	// carry vmdk, vhd or another format as their source was).
	Format     string           `json:"Format"`
	UserBucket ImportUserBucket `json:"UserBucket"`
}

// ImportUserBucket is where the disk was uploaded to.
type ImportUserBucket struct {
	S3Bucket string `json:"S3Bucket"`
	S3Key    string `json:"S3Key"`
}

// ImportTagSpecification tags the import task (and so the AMI).
type ImportTagSpecification struct {
	ResourceType string      `json:"ResourceType"`
	Tags         []ImportTag `json:"Tags"`
}

// ImportTag is one tag.
type ImportTag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

// ImportImageRequest is the ImportImage request for an AMI exported as the
// file img.
func ImportImageRequest(cfg *bundle.AMIConfig, img string) ImportImage {
	desc := cfg.Description
	if desc == "" {
		desc = cfg.Name
	}
	format := cfg.DiskFormat
	if format == "" {
		format = "raw"
	}
	req := ImportImage{Description: desc, Architecture: cfg.Architecture, BootMode: cfg.BootMode, Platform: "Linux",
		DiskContainers: []ImportDiskContainer{{Description: cfg.Name, Format: format, UserBucket: ImportUserBucket{S3Key: img}}}}
	if len(cfg.Tags) > 0 {
		ts := ImportTagSpecification{ResourceType: "import-image-task"}
		keys := make([]string, 0, len(cfg.Tags))
		for k := range cfg.Tags {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			ts.Tags = append(ts.Tags, ImportTag{Key: k, Value: cfg.Tags[k]})
		}
		req.TagSpecifications = []ImportTagSpecification{ts}
	}
	return req
}
