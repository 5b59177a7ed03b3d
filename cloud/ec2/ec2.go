package ec2

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	ebstypes "github.com/aws/aws-sdk-go-v2/service/ebs/types"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/installer"
)

// The tags every image and snapshot zdt creates carries.
const (
	TagBundle        = "zdt:bundle"         // the bundle's name
	TagBundleVersion = "zdt:bundle-version" // its version
	TagBundleRoot    = "zdt:bundle-root"    // its root digest
	TagItem          = "zdt:item"           // the AMI item's name
	TagItemDigest    = "zdt:item-digest"    // the AMI item's manifest digest
	TagSnapshot      = "zdt:snapshot"       // on an image: its root snapshot
)

// EBSAPI is the part of the EBS direct APIs an upload uses (*ebs.Client).
type EBSAPI interface {
	StartSnapshot(ctx context.Context, in *ebs.StartSnapshotInput, opts ...func(*ebs.Options)) (*ebs.StartSnapshotOutput, error)
	PutSnapshotBlock(ctx context.Context, in *ebs.PutSnapshotBlockInput, opts ...func(*ebs.Options)) (*ebs.PutSnapshotBlockOutput, error)
	CompleteSnapshot(ctx context.Context, in *ebs.CompleteSnapshotInput, opts ...func(*ebs.Options)) (*ebs.CompleteSnapshotOutput, error)
}

// EC2API is the part of EC2 registering and pruning images uses
// (*awsec2.Client).
type EC2API interface {
	DescribeImages(ctx context.Context, in *awsec2.DescribeImagesInput, opts ...func(*awsec2.Options)) (*awsec2.DescribeImagesOutput, error)
	RegisterImage(ctx context.Context, in *awsec2.RegisterImageInput, opts ...func(*awsec2.Options)) (*awsec2.RegisterImageOutput, error)
	DeregisterImage(ctx context.Context, in *awsec2.DeregisterImageInput, opts ...func(*awsec2.Options)) (*awsec2.DeregisterImageOutput, error)
	CreateTags(ctx context.Context, in *awsec2.CreateTagsInput, opts ...func(*awsec2.Options)) (*awsec2.CreateTagsOutput, error)
	DescribeSnapshots(ctx context.Context, in *awsec2.DescribeSnapshotsInput, opts ...func(*awsec2.Options)) (*awsec2.DescribeSnapshotsOutput, error)
	DeleteSnapshot(ctx context.Context, in *awsec2.DeleteSnapshotInput, opts ...func(*awsec2.Options)) (*awsec2.DeleteSnapshotOutput, error)
}

// Options configure New. Every zero field has the documented default.
type Options struct {
	// Region is the AWS region (required).
	Region string
	// Endpoint, if set, is the URL both the EC2 and the EBS clients talk
	// to (a private endpoint, or an emulator such as moto's server).
	Endpoint string
	// KMSKey, if set, encrypts the snapshots with this KMS key (ARN or
	// id); images registered from them are encrypted too.
	KMSKey string
	// Concurrency is how many blocks are uploaded at once (default 8);
	// Concurrency+2 blocks of 512 KiB are buffered.
	Concurrency int
	// WaitTimeout bounds waiting for a snapshot to complete (default 1h).
	WaitTimeout time.Duration
	// Logger receives progress messages (default: discard).
	Logger *slog.Logger
	// EBS and EC2, if set, are used instead of clients made from the
	// standard AWS configuration (tests wrap them to inject faults).
	EBS EBSAPI
	EC2 EC2API
}

// Registrar registers AMIs in one region (installer.AMIRegistrar). It is
// not safe for concurrent use: it remembers, between PlanAMIs and
// RegisterAMIs, the images it found untagged.
type Registrar struct {
	opts     Options
	ebs      EBSAPI
	ec2      EC2API
	untagged map[string]bool // image ids found by name, not by tag
	// Blocks and Bytes count what was uploaded (for reports and tests).
	blocks atomic.Int64
}

var _ installer.AMIRegistrar = (*Registrar)(nil)

// New makes a Registrar. Credentials come from the standard AWS chain
// (environment, shared config and credentials files, SSO, IMDS); nothing
// is sent until PlanAMIs.
func New(ctx context.Context, opts Options) (*Registrar, error) {
	if opts.Region == "" {
		return nil, errors.New("an aws region is required")
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 8
	}
	if opts.WaitTimeout <= 0 {
		opts.WaitTimeout = time.Hour
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Registrar{opts: opts, ebs: opts.EBS, ec2: opts.EC2, untagged: map[string]bool{}}
	if r.ebs == nil || r.ec2 == nil {
		cfg, err := config.LoadDefaultConfig(ctx, config.WithRegion(opts.Region))
		if err != nil {
			return nil, fmt.Errorf("loading the aws configuration: %w", err)
		}
		if r.ebs == nil {
			r.ebs = ebs.NewFromConfig(cfg, func(o *ebs.Options) {
				if opts.Endpoint != "" {
					o.BaseEndpoint = aws.String(opts.Endpoint)
				}
			})
		}
		if r.ec2 == nil {
			r.ec2 = awsec2.NewFromConfig(cfg, func(o *awsec2.Options) {
				if opts.Endpoint != "" {
					o.BaseEndpoint = aws.String(opts.Endpoint)
				}
			})
		}
	}
	return r, nil
}

// Region is the region the Registrar registers in (uninstall tells a
// recorded image of another region from one already gone by it).
func (r *Registrar) Region() string { return r.opts.Region }

// UploadedBlocks is the number of blocks this Registrar uploaded.
func (r *Registrar) UploadedBlocks() int64 { return r.blocks.Load() }

// image is a registered image as DescribeImages shows it.
type image struct {
	installer.AMI
	state  types.ImageState
	tagged bool
	bundle string // its TagBundle
	// rootSnapshot is the snapshot of its root device's mapping and
	// snapshots every snapshot its mappings name (not the tags: anyone
	// who can tag can say anything there).
	rootSnapshot string
	snapshots    []string
}

// PlanAMIs implements installer.AMIRegistrar: for each item the image
// registered for its digest (reuse) or none (register), and every image
// registered for the bundle's name. It only reads.
func (r *Registrar) PlanAMIs(ctx context.Context, b installer.AMIBundle) ([]installer.AMIChange, []installer.AMI, error) {
	imgs, err := r.describe(ctx, []types.Filter{{Name: aws.String("tag:" + TagBundle), Values: []string{b.Name}}})
	if err != nil {
		return nil, nil, err
	}
	var registered []installer.AMI
	byDigest := map[string]image{}
	for _, im := range imgs {
		// The endpoint's answer is checked, not its filtering trusted:
		// what is registered for the bundle may be deregistered (prune).
		if im.bundle != b.Name {
			continue
		}
		registered = append(registered, im.AMI)
		if usable(im.state) {
			byDigest[im.ItemDigest] = im
		}
	}
	var plan []installer.AMIChange
	for _, it := range b.Items {
		name := imageName(it)
		c := installer.AMIChange{Action: installer.AMIRegister, Size: it.Content.Size,
			AMI: installer.AMI{Item: it.Item.Name, ItemDigest: it.Item.Digest, Name: name, Region: r.opts.Region}}
		if im, ok := byDigest[it.Item.Digest]; ok {
			c.Action, c.AMI, c.Size = installer.AMIReuse, im.AMI, 0
			c.Item, c.Region = it.Item.Name, r.opts.Region
		} else {
			// An image of the name zdt registers this item under but not
			// tagged for the bundle: one a crash left untagged, or one
			// someone else registered under that name.
			found, err := r.describe(ctx, []types.Filter{{Name: aws.String("name"), Values: []string{name}}})
			if err != nil {
				return nil, nil, err
			}
			for _, im := range found {
				if !usable(im.state) || im.Name != name {
					continue
				}
				snap, err := r.adoptable(ctx, b, it, name, im)
				if err != nil {
					return nil, nil, err
				}
				c.Action, c.ImageID, c.SnapshotID, c.Size = installer.AMIReuse, im.ImageID, snap, 0
				if !im.tagged {
					r.untagged[im.ImageID] = true
				}
				break
			}
		}
		plan = append(plan, c)
	}
	sort.Slice(registered, func(i, j int) bool { return registered[i].ImageID < registered[j].ImageID })
	return plan, registered, nil
}

// ErrForeignImage is an image registered under the name zdt registers an
// item under that zdt cannot tell it registered (ForeignImageError).
var ErrForeignImage = errors.New("an image of this name is not one zdt registered")

// ForeignImageError is an image found under the name zdt registers an
// AMI item under, that is neither tagged for that item nor registered
// from the snapshot this install root journaled for it. It is not
// adopted, and nothing is registered while it holds the name.
type ForeignImageError struct {
	Item, ImageID, Name string
	// Why it is refused.
	Reason string
}

func (e *ForeignImageError) Error() string {
	return fmt.Sprintf("ami %s: image %s holds the name %q zdt registers this item under, but %s: if it is not yours, deregister it (aws ec2 deregister-image --image-id %s) and install again",
		e.Item, e.ImageID, e.Name, e.Reason, e.ImageID)
}

func (e *ForeignImageError) Unwrap() error { return ErrForeignImage }

// adoptable checks an image found by the item's name (not by its tags for
// the bundle) and returns its root snapshot when it may be used as the
// item's image: tagged for the same item digest (as any image found by its
// tags is), or untagged and registered from the snapshot the install
// journaled for the item (a crash between RegisterImage and its tagging),
// that snapshot still the account's own and completed, and no other
// snapshot in its mappings. Anything else is a *ForeignImageError.
func (r *Registrar) adoptable(ctx context.Context, b installer.AMIBundle, it installer.AMIItem, name string, im image) (string, error) {
	foreign := func(reason string, args ...any) error {
		return &ForeignImageError{Item: it.Item.Name, ImageID: printable(im.ImageID), Name: name, Reason: fmt.Sprintf(reason, args...)}
	}
	if im.tagged {
		if im.ItemDigest != it.Item.Digest {
			return "", foreign("it is tagged for item digest %q", im.ItemDigest)
		}
		return im.SnapshotID, nil
	}
	if b.Journal == nil {
		return "", foreign("it is not tagged by zdt and no snapshot journal was given to check it against")
	}
	rec, ok, err := b.Journal.AMISnapshot(ctx, r.opts.Region, it.Item.Digest)
	if err != nil {
		return "", fmt.Errorf("ami %s: %w", it.Item.Name, err)
	}
	switch {
	case !ok:
		return "", foreign("it is not tagged by zdt and this install root never completed a snapshot for the item")
	case rec.Name != name:
		return "", foreign("the snapshot journal of the item names image %q", rec.Name)
	case im.rootSnapshot != rec.SnapshotID:
		return "", foreign("its root volume's snapshot is %q, not %s, the one zdt uploaded for the item", im.rootSnapshot, rec.SnapshotID)
	}
	for _, s := range im.snapshots {
		if s != rec.SnapshotID {
			return "", foreign("it also maps snapshot %q", s)
		}
	}
	out, err := r.ec2.DescribeSnapshots(ctx, &awsec2.DescribeSnapshotsInput{SnapshotIds: []string{rec.SnapshotID}, OwnerIds: []string{"self"}})
	if err != nil && !notFound(err) {
		return "", fmt.Errorf("ami %s: checking snapshot %s: %w", it.Item.Name, rec.SnapshotID, err)
	}
	if err != nil || len(out.Snapshots) != 1 || aws.ToString(out.Snapshots[0].SnapshotId) != rec.SnapshotID || out.Snapshots[0].State != types.SnapshotStateCompleted {
		return "", foreign("snapshot %s, which zdt uploaded for the item, is not the account's own completed snapshot any more", rec.SnapshotID)
	}
	return rec.SnapshotID, nil
}

// printable is s when it is only letters, digits and dashes (an EC2 id),
// else s quoted: an endpoint's bytes reach the terminal in errors.
func printable(s string) string {
	for _, c := range s {
		if !(c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return strconv.Quote(s)
		}
	}
	return s
}

func usable(s types.ImageState) bool {
	return s == "" || s == types.ImageStateAvailable || s == types.ImageStatePending
}

// Bounds of describe: zdt's filters match a handful of images.
const (
	maxDescribePages  = 1000
	maxDescribeImages = 100000
)

// describe lists the account's own images matching filters, every page.
func (r *Registrar) describe(ctx context.Context, filters []types.Filter) ([]image, error) {
	var out []image
	p := awsec2.NewDescribeImagesPaginator(r.ec2, &awsec2.DescribeImagesInput{Owners: []string{"self"}, Filters: filters},
		func(o *awsec2.DescribeImagesPaginatorOptions) { o.StopOnDuplicateToken = true })
	for pages := 0; p.HasMorePages(); pages++ {
		// An endpoint that never stops paging must not hold the install.
		if pages >= maxDescribePages || len(out) >= maxDescribeImages {
			return nil, fmt.Errorf("listing images: more than %d pages or %d images: the endpoint keeps paging", maxDescribePages, maxDescribeImages)
		}
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("listing images: %w", err)
		}
		for _, im := range page.Images {
			i := image{state: im.State}
			i.ImageID, i.Name, i.Region = aws.ToString(im.ImageId), aws.ToString(im.Name), r.opts.Region
			for _, t := range im.Tags {
				switch aws.ToString(t.Key) {
				case TagBundle:
					i.bundle = aws.ToString(t.Value)
				case TagItem:
					i.Item = aws.ToString(t.Value)
				case TagItemDigest:
					i.ItemDigest, i.tagged = aws.ToString(t.Value), true
				case TagSnapshot:
					i.SnapshotID = aws.ToString(t.Value)
				}
			}
			for _, m := range im.BlockDeviceMappings {
				if m.Ebs == nil || m.Ebs.SnapshotId == nil {
					continue
				}
				s := aws.ToString(m.Ebs.SnapshotId)
				i.snapshots = append(i.snapshots, s)
				if aws.ToString(m.DeviceName) == aws.ToString(im.RootDeviceName) {
					i.rootSnapshot = s
				}
			}
			// The snapshot zdt tagged it with first (moto shows a root
			// volume snapshot of its own making).
			if i.SnapshotID == "" {
				i.SnapshotID = i.rootSnapshot
			}
			out = append(out, i)
		}
	}
	return out, nil
}

// RegisterAMIs implements installer.AMIRegistrar: every AMIRegister item
// of the plan is uploaded and registered, one after the other; reused
// images are returned as found (tagged first when they were found by name).
func (r *Registrar) RegisterAMIs(ctx context.Context, a *bundle.Archive, b installer.AMIBundle, plan []installer.AMIChange) ([]installer.AMI, error) {
	items := map[string]installer.AMIItem{}
	for _, it := range b.Items {
		items[it.Item.Digest] = it
	}
	var out []installer.AMI
	for _, c := range plan {
		it, ok := items[c.ItemDigest]
		if !ok {
			return nil, fmt.Errorf("ami %s: not an item of the bundle", c.Item)
		}
		switch c.Action {
		case installer.AMIReuse:
			if r.untagged[c.ImageID] {
				if err := r.tag(ctx, b, it, c.ImageID, c.SnapshotID); err != nil {
					return nil, fmt.Errorf("ami %s: tagging %s: %w", c.Item, c.ImageID, err)
				}
			}
			out = append(out, c.AMI)
		case installer.AMIRegister:
			ami, err := r.register(ctx, a, b, it)
			if err != nil {
				return nil, fmt.Errorf("ami %s: %w", c.Item, err)
			}
			out = append(out, ami)
		}
	}
	return out, nil
}

// register uploads one item's disk as a snapshot and registers it.
func (r *Registrar) register(ctx context.Context, a *bundle.Archive, b installer.AMIBundle, it installer.AMIItem) (installer.AMI, error) {
	ami := installer.AMI{Item: it.Item.Name, ItemDigest: it.Item.Digest, Name: imageName(it), Region: r.opts.Region}
	// Snapshots an earlier, failed run left for this item (no image uses
	// them: none is registered for this digest).
	if err := r.deleteLeftovers(ctx, b.Name, it.Item.Digest); err != nil {
		return ami, err
	}
	before := r.blocks.Load()
	snap, sum, err := r.upload(ctx, a, b, it)
	if err != nil {
		return ami, err
	}
	ami.Blocks = r.blocks.Load() - before
	ami.SnapshotID = snap
	// Journaled before the image exists: after a crash between
	// RegisterImage and the tagging, the image found by name is adopted
	// only when it was made from this snapshot.
	if b.Journal != nil {
		if err := b.Journal.RecordAMISnapshot(ctx, installer.AMISnapshot{Item: it.Item.Name, ItemDigest: it.Item.Digest,
			Region: r.opts.Region, Name: ami.Name, SnapshotID: snap, Checksum: sum}); err != nil {
			r.deleteSnapshot(ctx, snap)
			return ami, err
		}
	}
	id, err := r.registerImage(ctx, b, it, ami)
	if err != nil {
		r.deleteSnapshot(ctx, snap)
		return ami, err
	}
	ami.ImageID = id
	if err := r.tag(ctx, b, it, id, snap); err != nil {
		// An untagged image would not be found again: take it back.
		r.deregister(ctx, ami)
		return ami, fmt.Errorf("tagging %s: %w", id, err)
	}
	r.opts.Logger.Info("registered ami", "item", it.Item.Name, "image", id, "snapshot", snap)
	return ami, nil
}

// upload sends the item's disk to a new snapshot and waits for it to
// complete; it returns the snapshot and the aggregate checksum it was
// completed with. On any failure the snapshot is deleted.
func (r *Registrar) upload(ctx context.Context, a *bundle.Archive, b installer.AMIBundle, it installer.AMIItem) (snap, sum string, err error) {
	c := it.Content
	gib := volumeGiB(it)
	in := &ebs.StartSnapshotInput{
		VolumeSize:  aws.Int64(gib),
		Description: aws.String(fmt.Sprintf("zdt %s %s: ami %s (%s)", b.Name, b.Version, it.Item.Name, it.Item.Digest)),
		Tags:        ebsTags(b, it),
		Timeout:     aws.Int32(60), // minutes without a block before EBS gives up on it
	}
	if r.opts.KMSKey != "" {
		in.Encrypted, in.KmsKeyArn = aws.Bool(true), aws.String(r.opts.KMSKey)
	}
	out, err := r.ebs.StartSnapshot(ctx, in)
	if err != nil {
		return "", "", fmt.Errorf("starting a snapshot: %w", err)
	}
	if out.SnapshotId == nil {
		return "", "", errNoSnapshotID
	}
	snap = *out.SnapshotId
	defer func() {
		if err != nil {
			r.deleteSnapshot(ctx, snap)
		}
	}()
	rc, err := a.OpenContent(ctx, c)
	if err != nil {
		return snap, "", err
	}
	defer rc.Close()
	before := r.blocks.Load()
	sums, err := putBlocks(ctx, r.ebs, snap, rc, c.Size, r.opts.Concurrency, &r.blocks)
	if err != nil {
		return snap, "", fmt.Errorf("uploading the disk to %s: %w", snap, err)
	}
	sum = aggregateChecksum(sums)
	if _, err := r.ebs.CompleteSnapshot(ctx, &ebs.CompleteSnapshotInput{
		SnapshotId:                aws.String(snap),
		ChangedBlocksCount:        aws.Int32(int32(len(sums))),
		Checksum:                  aws.String(sum),
		ChecksumAlgorithm:         ebstypes.ChecksumAlgorithmChecksumAlgorithmSha256,
		ChecksumAggregationMethod: ebstypes.ChecksumAggregationMethodChecksumAggregationLinear,
	}); err != nil {
		return snap, "", fmt.Errorf("completing %s: %w", snap, err)
	}
	r.opts.Logger.Info("uploaded snapshot", "item", it.Item.Name, "snapshot", snap, "blocks", r.blocks.Load()-before, "size", c.Size)
	return snap, sum, r.waitSnapshot(ctx, snap)
}

// waitSnapshot polls the snapshot until it is completed (or in error).
func (r *Registrar) waitSnapshot(ctx context.Context, snap string) error {
	ctx, cancel := context.WithTimeout(ctx, r.opts.WaitTimeout)
	defer cancel()
	delay := 250 * time.Millisecond
	for {
		out, err := r.ec2.DescribeSnapshots(ctx, &awsec2.DescribeSnapshotsInput{SnapshotIds: []string{snap}})
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", snap, err)
		}
		if len(out.Snapshots) == 1 {
			switch s := out.Snapshots[0]; s.State {
			case types.SnapshotStateCompleted:
				return nil
			case types.SnapshotStateError:
				return fmt.Errorf("snapshot %s failed: %s", snap, aws.ToString(s.StateMessage))
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", snap, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 5*time.Second)
	}
}

// registerImage registers the snapshot as an image with the item's
// metadata.
func (r *Registrar) registerImage(ctx context.Context, b installer.AMIBundle, it installer.AMIItem, ami installer.AMI) (string, error) {
	if it.Content.AMI == nil {
		return "", fmt.Errorf("no ami config")
	}
	in := registerInput(b, it, ami)
	out, err := r.ec2.RegisterImage(ctx, in)
	if err != nil {
		return "", fmt.Errorf("registering the image: %w", err)
	}
	return aws.ToString(out.ImageId), nil
}

// tag tags an image (and its snapshot) with the bundle and item: an
// emulator may ignore RegisterImage's TagSpecifications, and an image
// found by name needs them.
func (r *Registrar) tag(ctx context.Context, b installer.AMIBundle, it installer.AMIItem, id, snap string) error {
	_, err := r.ec2.CreateTags(ctx, &awsec2.CreateTagsInput{Resources: []string{id}, Tags: ec2Tags(b, it, snap)})
	return err
}

// DeregisterAMIs implements installer.AMIRegistrar: each image is
// deregistered (one already gone is no error) and its snapshots — its root
// volume's and those tagged with its item digest for the same bundle —
// deleted.
func (r *Registrar) DeregisterAMIs(ctx context.Context, amis []installer.AMI) error {
	var errs []error
	for _, a := range amis {
		if err := r.deregister(ctx, a); err != nil {
			errs = append(errs, fmt.Errorf("ami %s (%s): %w", a.ImageID, a.Item, err))
		}
	}
	return errors.Join(errs...)
}

func (r *Registrar) deregister(ctx context.Context, a installer.AMI) error {
	if _, err := r.ec2.DeregisterImage(ctx, &awsec2.DeregisterImageInput{ImageId: aws.String(a.ImageID)}); err != nil && !notFound(err) {
		return fmt.Errorf("deregistering: %w", err)
	}
	r.opts.Logger.Info("deregistered ami", "image", a.ImageID, "item", a.Item)
	if a.SnapshotID != "" {
		if _, err := r.ec2.DeleteSnapshot(ctx, &awsec2.DeleteSnapshotInput{SnapshotId: aws.String(a.SnapshotID)}); err != nil && !notFound(err) {
			return fmt.Errorf("deleting snapshot %s: %w", a.SnapshotID, err)
		}
	}
	return nil
}

// deleteLeftovers deletes the snapshots tagged for bundle name and item
// digest d: called only when no image is registered for d, so none of
// them is in use.
func (r *Registrar) deleteLeftovers(ctx context.Context, name, d string) error {
	out, err := r.ec2.DescribeSnapshots(ctx, &awsec2.DescribeSnapshotsInput{OwnerIds: []string{"self"}, Filters: []types.Filter{
		{Name: aws.String("tag:" + TagBundle), Values: []string{name}},
		{Name: aws.String("tag:" + TagItemDigest), Values: []string{d}},
	}})
	if err != nil {
		return fmt.Errorf("listing earlier snapshots: %w", err)
	}
	for _, s := range out.Snapshots {
		id := aws.ToString(s.SnapshotId)
		// The endpoint's answer is checked, not its filtering trusted: a
		// snapshot without both tags is not one zdt left.
		if tagOf(s.Tags, TagBundle) != name || tagOf(s.Tags, TagItemDigest) != d {
			r.opts.Logger.Warn("the endpoint listed a snapshot the filter excludes; left alone", "snapshot", id)
			continue
		}
		r.opts.Logger.Info("deleting a snapshot an earlier run left", "snapshot", id, "state", s.State)
		if _, err := r.ec2.DeleteSnapshot(ctx, &awsec2.DeleteSnapshotInput{SnapshotId: aws.String(id)}); err != nil && !notFound(err) {
			return fmt.Errorf("deleting snapshot %s an earlier run left: %w", id, err)
		}
	}
	return nil
}

// deleteSnapshot deletes a snapshot a failed upload or registration made,
// even when ctx was cancelled; a failure is logged (the next run deletes
// it: deleteLeftovers).
func (r *Registrar) deleteSnapshot(ctx context.Context, snap string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if _, err := r.ec2.DeleteSnapshot(ctx, &awsec2.DeleteSnapshotInput{SnapshotId: aws.String(snap)}); err != nil && !notFound(err) {
		r.opts.Logger.Warn("deleting the snapshot of a failed upload (the next install deletes it)", "snapshot", snap, "err", err)
		return
	}
	r.opts.Logger.Info("deleted the snapshot of a failed upload", "snapshot", snap)
}

// tagOf is the value of tag key k ("" when there is none).
func tagOf(tags []types.Tag, k string) string {
	for _, t := range tags {
		if aws.ToString(t.Key) == k {
			return aws.ToString(t.Value)
		}
	}
	return ""
}

func notFound(err error) bool {
	var ae smithy.APIError
	return errors.As(err, &ae) && strings.HasSuffix(ae.ErrorCode(), ".NotFound")
}

// volumeGiB is the root volume's size: the disk rounded up to GiB.
func volumeGiB(it installer.AMIItem) int64 {
	return max(1, (it.Content.Size+1<<30-1)>>30)
}

var nameChars = regexp.MustCompile(`[^A-Za-z0-9()\[\] ./\-'@_]`)

// imageName is the registered name: the AMI's name and the item digest's
// first 12 hex digits (EC2 names are unique per account and region, and
// an upgrade registers its new image beside the old one).
func imageName(it installer.AMIItem) string {
	name := it.Item.Name
	if it.Content.AMI != nil && it.Content.AMI.Name != "" {
		name = it.Content.AMI.Name
	}
	name = nameChars.ReplaceAllString(name, "_")
	if len(name) > 114 {
		name = name[:114]
	}
	hex := strings.TrimPrefix(it.Item.Digest, "sha256:")
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return name + "-" + hex
}

func tagPairs(b installer.AMIBundle, it installer.AMIItem) [][2]string {
	ours := [][2]string{
		{"Name", imageName(it)},
		{TagBundle, b.Name}, {TagBundleVersion, b.Version}, {TagBundleRoot, b.Root},
		{TagItem, it.Item.Name}, {TagItemDigest, it.Item.Digest},
	}
	var out [][2]string
	for _, t := range specTags(it.Content.AMI) {
		if !slices.ContainsFunc(ours, func(o [2]string) bool { return o[0] == t[0] }) && t[0] != TagSnapshot {
			out = append(out, t)
		}
	}
	return append(out, ours...)
}

func ec2Tags(b installer.AMIBundle, it installer.AMIItem, snap string) []types.Tag {
	var out []types.Tag
	for _, p := range tagPairs(b, it) {
		out = append(out, types.Tag{Key: aws.String(p[0]), Value: aws.String(p[1])})
	}
	if snap != "" {
		out = append(out, types.Tag{Key: aws.String(TagSnapshot), Value: aws.String(snap)})
	}
	return out
}

func ebsTags(b installer.AMIBundle, it installer.AMIItem) []ebstypes.Tag {
	var out []ebstypes.Tag
	for _, p := range tagPairs(b, it) {
		out = append(out, ebstypes.Tag{Key: aws.String(p[0]), Value: aws.String(p[1])})
	}
	return out
}
