package build

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/asynchash"
	"zdt.dev/zdt/internal/diskimage"
	"zdt.dev/zdt/manifests"
)

// DefaultMaxDiskSize is the largest virtual size of an AMI's disk image
// create accepts by default (CreateOptions.MaxDiskSize): 2 TiB.
const DefaultMaxDiskSize = diskimage.DefaultMaxSize

// ErrDiskImage is an AMI source that is not a disk image zdt reads: a
// format or feature it does not read (a backing file, vhdx, ...), a
// corrupt or crafted image, or one over CreateOptions.MaxDiskSize.
var ErrDiskImage = errors.New("bad disk image")

// mediaTypeRawDisk is the layer of every AMI create writes: the raw disk,
// zstd-compressed (its zero regions cost a few bytes per 128 KiB).
const mediaTypeRawDisk = manifests.MediaTypeDiskZstdPrefix + "raw+zstd"

// ami stages a disk image, converted to raw, and its AMI metadata. A raw
// source on the local disk is read in place (its holes are not read); any
// other source is first stored as a blob (checked against the spec's
// sha256 and size), then read from there, so that what was checked is what
// is converted.
func (c *creator) ami(ctx context.Context, comp string, a manifests.AMI) (resolved, error) {
	fail := func(err error) (resolved, error) {
		return resolved{}, fmt.Errorf("%sami %s: %w", c.at(a.Pos), a.Name, c.explainSource(ctx, a.Source, err))
	}
	src, srcSize, srcDigest, closeSrc, err := c.openDisk(ctx, a)
	if err != nil {
		return fail(err)
	}
	defer closeSrc()
	img, err := diskimage.Open(src, srcSize, diskimage.Options{MaxSize: c.opts.MaxDiskSize, Format: diskimage.Format(a.Format)})
	if err != nil {
		return fail(fmt.Errorf("%s: %w (%w)", a.Source, err, ErrDiskImage))
	}
	cfg := amiConfig(a, img.Size)
	cfg.DiskFormat, cfg.DiskSize = string(diskimage.Raw), img.Size
	if err := checkRootVolume(cfg); err != nil {
		return fail(err)
	}
	layer, raw, st, err := c.storeRawDisk(ctx, img)
	if err != nil {
		var be error
		if errors.Is(err, diskimage.ErrCorrupt) || errors.Is(err, diskimage.ErrTooLarge) || errors.Is(err, diskimage.ErrUnsupported) {
			be = ErrDiskImage
		}
		if be != nil {
			return fail(fmt.Errorf("%s: %w (%w)", a.Source, err, be))
		}
		return fail(err)
	}
	if srcDigest == "" { // a raw file read in place: its bytes are the disk's
		srcDigest = raw
		if a.SHA256 != "" && raw.Encoded() != a.SHA256 {
			return fail(&SourceDigestError{Source: a.Source, Want: a.SHA256, Got: raw.Encoded()})
		}
	}
	layer.Annotations = map[string]string{
		ocispec.AnnotationTitle:                a.Name + ".raw.zst",
		manifests.AnnotationUncompressedDigest: raw.String(),
		manifests.AnnotationUncompressedSize:   fmt.Sprint(img.Size),
	}
	cfg.DiskDigest = raw.String()
	cfg.SourceFormat, cfg.SourceVariant, cfg.SourceSize, cfg.SourceDigest = string(img.Format), img.Variant, srcSize, srcDigest.String()
	cb, _ := json.Marshal(cfg)
	cfgDesc, err := c.store.PutBytes(ctx, manifests.MediaTypeAMIConfig, cb)
	if err != nil {
		return fail(err)
	}
	desc, err := c.store.putManifest(ctx, manifests.ArtifactTypeAMI, cfgDesc, []ocispec.Descriptor{layer}, map[string]string{
		ocispec.AnnotationTitle: a.Name,
	})
	if err != nil {
		return fail(err)
	}
	it := bundle.Item{Component: comp, Kind: manifests.KindAMI, Name: a.Name, Ref: "amis/" + a.Name + ":" + c.spec.Metadata.Version,
		Digest: desc.Digest.String(), MediaType: desc.MediaType}
	c.opts.Logger.Info("staged ami", "name", a.Name, "format", img.Format, "variant", img.Variant, "bytes", img.Size,
		"data", st.Data, "stored", layer.Size)
	return resolved{item: it, desc: desc, lock: manifests.LockItem{Component: comp, Kind: it.Kind, Name: a.Name, Digest: it.Digest, Source: a.Source}}, nil
}

// amiConfig is the AMI metadata of a, with defaults, for a disk of size
// bytes: the root device is always among the block device mappings, first.
func amiConfig(a manifests.AMI, size int64) bundle.AMIConfig {
	cfg := bundle.AMIConfig{Name: a.Name, Description: a.Description, Architecture: orDefault(a.Architecture, "x86_64"),
		BootMode: orDefault(a.BootMode, "legacy-bios"), Virtualization: orDefault(a.Virtualization, "hvm"),
		RootDevice: orDefault(a.RootDevice, "/dev/xvda"), ENA: a.ENA, TPM: a.TPM,
		SriovNetSupport: a.SriovNetSupport, IMDSSupport: a.IMDSSupport}
	if a.TPM {
		cfg.TPMSupport = "v2.0"
	}
	if len(a.Tags) > 0 {
		cfg.Tags = a.Tags
	}
	gib := (size + 1<<30 - 1) >> 30
	root := bundle.AMIBlockDevice{DeviceName: cfg.RootDevice, VolumeSize: max(gib, 1), VolumeType: "gp3", DeleteOnTermination: true}
	var rest []bundle.AMIBlockDevice
	for _, bd := range a.BlockDeviceMappings {
		d := bundle.AMIBlockDevice{DeviceName: bd.DeviceName, VolumeSize: bd.VolumeSize, VolumeType: orDefault(bd.VolumeType, "gp3"),
			DeleteOnTermination: bd.DeleteOnTermination == nil || *bd.DeleteOnTermination, IOPS: bd.IOPS, Throughput: bd.Throughput}
		if d.DeviceName == cfg.RootDevice {
			if d.VolumeSize == 0 {
				d.VolumeSize = root.VolumeSize
			}
			root = d
			continue
		}
		rest = append(rest, d)
	}
	cfg.BlockDeviceMappings = append([]bundle.AMIBlockDevice{root}, rest...)
	return cfg
}

// checkRootVolume refuses a root volume smaller than the disk, and a
// non-root volume without a size (it has no snapshot to take one from).
func checkRootVolume(cfg bundle.AMIConfig) error {
	for i, bd := range cfg.BlockDeviceMappings {
		if i == 0 && bd.VolumeSize<<30 < cfg.DiskSize {
			return fmt.Errorf("the root volume %s of %d GiB is smaller than the disk (%d bytes)", bd.DeviceName, bd.VolumeSize, cfg.DiskSize)
		}
		if i > 0 && bd.VolumeSize == 0 {
			return fmt.Errorf("volume %s has no volumeSize", bd.DeviceName)
		}
	}
	return nil
}

// openDisk opens an AMI's source for random access. A local raw file is
// opened in place (digest "": the conversion hashes it); anything else is
// stored as a blob first, checked against the spec's sha256 and size, and
// its digest returned.
func (c *creator) openDisk(ctx context.Context, a manifests.AMI) (io.ReaderAt, int64, digest.Digest, func(), error) {
	if !strings.HasPrefix(a.Source, "https://") && !strings.HasPrefix(a.Source, "http://") {
		f, err := os.Open(c.path(a.Source))
		if err != nil {
			return nil, 0, "", nil, err
		}
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() {
			f.Close()
			if err == nil {
				err = fmt.Errorf("%s is not a regular file", a.Source)
			}
			return nil, 0, "", nil, err
		}
		if a.Size > 0 && fi.Size() != a.Size {
			f.Close()
			return nil, 0, "", nil, fmt.Errorf("%s: %d bytes, the spec says %d: %w", a.Source, fi.Size(), a.Size, bundle.ErrSizeMismatch)
		}
		f2, err := diskimage.Detect(f, fi.Size())
		if err == nil && f2 == diskimage.Raw {
			return f, fi.Size(), "", func() { f.Close() }, nil
		}
		f.Close()
		// Not raw (or refused: diskimage.Open says why again): stored first.
	}
	var desc ocispec.Descriptor
	err := retryTransient(ctx, func() error {
		rc, err := c.openSource(ctx, a.Source)
		if err != nil {
			return err
		}
		defer rc.Close()
		var r io.Reader = rc
		if a.Size > 0 {
			r = io.LimitReader(rc, a.Size+1)
		}
		desc, err = c.store.Ingest(ctx, "application/octet-stream", r)
		return err
	})
	if err != nil {
		return nil, 0, "", nil, err
	}
	if a.Size > 0 && desc.Size != a.Size {
		return nil, 0, "", nil, fmt.Errorf("%s: %d bytes or more, the spec says %d: %w", a.Source, desc.Size, a.Size, bundle.ErrSizeMismatch)
	}
	if a.SHA256 != "" && desc.Digest.Encoded() != a.SHA256 {
		return nil, 0, "", nil, &SourceDigestError{Source: a.Source, Want: a.SHA256, Got: desc.Digest.Encoded()}
	}
	rc, err := c.store.Fetch(ctx, desc)
	if err != nil {
		return nil, 0, "", nil, err
	}
	ra, ok := rc.(io.ReaderAt)
	if !ok {
		rc.Close()
		return nil, 0, "", nil, fmt.Errorf("staged %s cannot be read at offsets", desc.Digest)
	}
	return ra, desc.Size, desc.Digest, func() { rc.Close() }, nil
}

// storeRawDisk writes img's raw disk, zstd-compressed, into the store,
// hashing the raw bytes on the way: zero extents are written from a zero
// buffer (never read) and compress to a few bytes each 128 KiB.
func (c *creator) storeRawDisk(ctx context.Context, img *diskimage.Image) (ocispec.Descriptor, digest.Digest, diskimage.Stats, error) {
	pr, pw := io.Pipe()
	// The raw bytes are hashed on a core of their own beside the
	// compression: the two passes take about as long each.
	sum256 := sha256.New()
	h := asynchash.New(sum256)
	var st diskimage.Stats
	done := make(chan struct{})
	go func() {
		defer close(done)
		enc, err := zstd.NewWriter(pw, zstd.WithEncoderConcurrency(1), zstd.WithEncoderLevel(zstd.SpeedDefault))
		if err == nil {
			st, err = img.WriteTo(ctx, io.MultiWriter(h, enc))
			if cerr := enc.Close(); err == nil {
				err = cerr
			}
		}
		pw.CloseWithError(err)
	}()
	desc, err := c.store.Ingest(ctx, mediaTypeRawDisk, pr)
	pr.CloseWithError(errors.New("staging stopped"))
	<-done
	h.Wait()
	sum := digest.NewDigest(digest.SHA256, sum256)
	if err != nil {
		return ocispec.Descriptor{}, "", st, err
	}
	return desc, sum, st, nil
}
