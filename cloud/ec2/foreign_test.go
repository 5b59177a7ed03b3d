package ec2_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"zdt.dev/zdt/cloud/ec2"
	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/internal/mototest"
)

var errCrashed = errors.New("zdt crashed: nothing it sends arrives")

// awsLikeEC2 is moto's EC2 made to show what AWS shows where moto (5.2.1)
// does not: an image's block device mappings are those it was registered
// with (moto shows a root snapshot of its own making). With crashAfter,
// the first successful RegisterImage "crashes" zdt: from then on nothing
// it sends reaches EC2 (no tagging, no clean-up), as after a kill.
type awsLikeEC2 struct {
	ec2.EC2API
	mu         sync.Mutex
	registered map[string]*awsec2.RegisterImageInput
	crashAfter bool
	crashed    bool
}

func (e *awsLikeEC2) down() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.crashed
}

func (e *awsLikeEC2) RegisterImage(ctx context.Context, in *awsec2.RegisterImageInput, opts ...func(*awsec2.Options)) (*awsec2.RegisterImageOutput, error) {
	if e.down() {
		return nil, errCrashed
	}
	out, err := e.EC2API.RegisterImage(ctx, in, opts...)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.registered[aws.ToString(out.ImageId)] = in
	if e.crashAfter {
		e.crashed = true
		return nil, errCrashed
	}
	return out, nil
}

func (e *awsLikeEC2) DescribeImages(ctx context.Context, in *awsec2.DescribeImagesInput, opts ...func(*awsec2.Options)) (*awsec2.DescribeImagesOutput, error) {
	if e.down() {
		return nil, errCrashed
	}
	out, err := e.EC2API.DescribeImages(ctx, in, opts...)
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, im := range out.Images {
		if reg, ok := e.registered[aws.ToString(im.ImageId)]; ok {
			out.Images[i].RootDeviceName, out.Images[i].BlockDeviceMappings = reg.RootDeviceName, reg.BlockDeviceMappings
		}
	}
	return out, nil
}

func (e *awsLikeEC2) CreateTags(ctx context.Context, in *awsec2.CreateTagsInput, opts ...func(*awsec2.Options)) (*awsec2.CreateTagsOutput, error) {
	if e.down() {
		return nil, errCrashed
	}
	return e.EC2API.CreateTags(ctx, in, opts...)
}

func (e *awsLikeEC2) DeregisterImage(ctx context.Context, in *awsec2.DeregisterImageInput, opts ...func(*awsec2.Options)) (*awsec2.DeregisterImageOutput, error) {
	if e.down() {
		return nil, errCrashed
	}
	return e.EC2API.DeregisterImage(ctx, in, opts...)
}

func (e *awsLikeEC2) DescribeSnapshots(ctx context.Context, in *awsec2.DescribeSnapshotsInput, opts ...func(*awsec2.Options)) (*awsec2.DescribeSnapshotsOutput, error) {
	if e.down() {
		return nil, errCrashed
	}
	return e.EC2API.DescribeSnapshots(ctx, in, opts...)
}

func (e *awsLikeEC2) DeleteSnapshot(ctx context.Context, in *awsec2.DeleteSnapshotInput, opts ...func(*awsec2.Options)) (*awsec2.DeleteSnapshotOutput, error) {
	if e.down() {
		return nil, errCrashed
	}
	return e.EC2API.DeleteSnapshot(ctx, in, opts...)
}

func newAWSLike(c clients) *awsLikeEC2 {
	return &awsLikeEC2{EC2API: c.ec2, registered: map[string]*awsec2.RegisterImageInput{}}
}

func registrarWith(t testing.TB, m *mototest.Server, c clients, e ec2.EC2API) *ec2.Registrar {
	t.Helper()
	r, err := ec2.New(context.Background(), ec2.Options{Region: mototest.Region, Endpoint: m.URL, EC2: e, EBS: c.ebs})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// imagesNamed is every image of the account named name.
func imagesNamed(t testing.TB, c clients, name string) []types.Image {
	t.Helper()
	out, err := c.ec2.DescribeImages(context.Background(), &awsec2.DescribeImagesInput{Owners: []string{"self"},
		Filters: []types.Filter{{Name: aws.String("name"), Values: []string{name}}}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Images
}

// snapshotsOfItem is every snapshot zdt tagged for item digest d.
func snapshotsOfItem(t testing.TB, c clients, d string) []types.Snapshot {
	t.Helper()
	out, err := c.ec2.DescribeSnapshots(context.Background(), &awsec2.DescribeSnapshotsInput{OwnerIds: []string{"self"},
		Filters: []types.Filter{{Name: aws.String("tag:" + ec2.TagItemDigest), Values: []string{d}}}})
	if err != nil {
		t.Fatal(err)
	}
	return out.Snapshots
}

// TestForeignImageOfOurNameRefused: someone able to RegisterImage in the
// account registered, before zdt, an image under the very name zdt
// registers the AMI item under, from a snapshot of theirs (a poisoned
// disk). zdt does not adopt it: the install fails naming the image, its
// name and what to do, having uploaded and registered nothing. Once it is
// deregistered, the install registers the item's own image.
func TestForeignImageOfOurNameRefused(t *testing.T) {
	m := mototest.Shared(t)
	ctx := context.Background()
	dir := t.TempDir()
	disk := filepath.Join(dir, "node.raw")
	writeDisk(t, disk, 8<<20, 101, []extent{{0, 1 << 20}})
	a := amiBundle(t, dir, "foreign", "1", disk)
	root := filepath.Join(dir, "root")
	c := newClients(t, m)
	aws2 := newAWSLike(c)

	plan, err := installer.Install(ctx, a, installer.Options{Root: root, AMIs: registrarWith(t, m, c, aws2), PlanOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Plan.AMIs) != 1 || plan.Plan.AMIs[0].Action != installer.AMIRegister {
		t.Fatalf("plan %+v, want one register", plan.Plan.AMIs)
	}
	name, itemDigest := plan.Plan.AMIs[0].Name, plan.Plan.AMIs[0].ItemDigest

	// The attacker's snapshot and image, under zdt's name, untagged.
	vol, err := c.ec2.CreateVolume(ctx, &awsec2.CreateVolumeInput{AvailabilityZone: aws.String(mototest.Region + "a"), Size: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := c.ec2.CreateSnapshot(ctx, &awsec2.CreateSnapshotInput{VolumeId: vol.VolumeId})
	if err != nil {
		t.Fatal(err)
	}
	poisoned, err := aws2.RegisterImage(ctx, &awsec2.RegisterImageInput{Name: aws.String(name), Architecture: types.ArchitectureValuesX8664,
		VirtualizationType: aws.String("hvm"), RootDeviceName: aws.String("/dev/xvda"),
		BlockDeviceMappings: []types.BlockDeviceMapping{{DeviceName: aws.String("/dev/xvda"), Ebs: &types.EbsBlockDevice{SnapshotId: snap.SnapshotId}}}})
	if err != nil {
		t.Fatal(err)
	}
	id := aws.ToString(poisoned.ImageId)

	reg := registrarWith(t, m, c, aws2)
	_, err = install(t, a, root, reg, false)
	var fe *ec2.ForeignImageError
	if !errors.Is(err, ec2.ErrForeignImage) || !errors.As(err, &fe) || fe.ImageID != id || fe.Name != name {
		t.Fatalf("install error = %v, want image %s refused", err, id)
	}
	for _, want := range []string{id, name, "deregister", "ami node"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q: %v", want, err)
		}
	}
	if imgs := imagesNamed(t, c, name); reg.UploadedBlocks() != 0 || len(imgs) != 1 || aws.ToString(imgs[0].ImageId) != id {
		t.Errorf("after the refusal: %d blocks uploaded, images named %s: %d", reg.UploadedBlocks(), name, len(imgs))
	}
	if snaps := snapshotsOfItem(t, c, itemDigest); len(snaps) != 0 {
		t.Errorf("after the refusal: %d snapshots of the item", len(snaps))
	}
	if st, err := installer.GetStatus(ctx, root); err != nil || st.Installed {
		t.Errorf("status after the refusal: installed %v, %v", st.Installed, err)
	}
	// Nor when the attacker also forges the zdt:snapshot tag (which says
	// nothing: anyone who can register can tag).
	if _, err := c.ec2.CreateTags(ctx, &awsec2.CreateTagsInput{Resources: []string{id},
		Tags: []types.Tag{{Key: aws.String(ec2.TagSnapshot), Value: aws.String("snap-0123456789abcdef0")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := install(t, a, root, registrarWith(t, m, c, aws2), false); !errors.Is(err, ec2.ErrForeignImage) {
		t.Fatalf("with a forged snapshot tag: %v, want the image refused", err)
	}

	// Deregistered, as the error says: the item's own image is registered.
	if _, err := c.ec2.DeregisterImage(ctx, &awsec2.DeregisterImageInput{ImageId: aws.String(id)}); err != nil {
		t.Fatal(err)
	}
	reg = registrarWith(t, m, c, aws2)
	res, err := install(t, a, root, reg, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.AMIs) != 1 || res.AMIs[0].ImageID == id || reg.UploadedBlocks() == 0 {
		t.Fatalf("after deregistering: %+v, %d blocks", res.AMIs, reg.UploadedBlocks())
	}
}

// TestCrashAfterRegisterImageAdopted: zdt is killed right after
// RegisterImage returned, before it tagged the image (moto, like an
// emulator, ignores RegisterImage's TagSpecifications: the image is
// untagged). The re-run finds the image by name, checks that its root
// snapshot is the one the first run journaled under --root before
// registering, adopts it (uploading nothing, registering nothing) and
// tags it.
func TestCrashAfterRegisterImageAdopted(t *testing.T) {
	m := mototest.Shared(t)
	ctx := context.Background()
	dir := t.TempDir()
	disk := filepath.Join(dir, "node.raw")
	writeDisk(t, disk, 8<<20, 102, []extent{{0, 1 << 20}, {5 << 20, 4096}})
	a := amiBundle(t, dir, "crashed", "1", disk)
	root := filepath.Join(dir, "root")
	c := newClients(t, m)
	aws2 := newAWSLike(c)
	aws2.crashAfter = true

	first := registrarWith(t, m, c, aws2)
	if _, err := install(t, a, root, first, false); !errors.Is(err, errCrashed) {
		t.Fatalf("first install: %v, want the crash", err)
	}
	var crashedID, snap string
	for id, in := range aws2.registered {
		crashedID, snap = id, aws.ToString(in.BlockDeviceMappings[0].Ebs.SnapshotId)
	}
	if len(aws2.registered) != 1 || first.UploadedBlocks() == 0 {
		t.Fatalf("the first install registered %d images, uploaded %d blocks", len(aws2.registered), first.UploadedBlocks())
	}
	recs, _ := filepath.Glob(filepath.Join(root, "var/lib/zdt/amis/*.json"))
	if len(recs) != 1 {
		t.Fatalf("journal records: %v, want the snapshot's", recs)
	}
	if b, err := os.ReadFile(recs[0]); err != nil || !strings.Contains(string(b), snap) {
		t.Fatalf("journal record %s: %s, %v; want snapshot %s", recs[0], b, err, snap)
	}

	aws2.mu.Lock()
	aws2.crashAfter, aws2.crashed = false, false
	aws2.mu.Unlock()
	reg := registrarWith(t, m, c, aws2)
	res, err := install(t, a, root, reg, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Plan.AMIs) != 1 || res.Plan.AMIs[0].Action != installer.AMIReuse || reg.UploadedBlocks() != 0 {
		t.Fatalf("re-run plan %+v, %d blocks uploaded; want the image reused", res.Plan.AMIs, reg.UploadedBlocks())
	}
	if len(res.AMIs) != 1 || res.AMIs[0].ImageID != crashedID || res.AMIs[0].SnapshotID != snap {
		t.Fatalf("re-run amis %+v, want %s from %s", res.AMIs, crashedID, snap)
	}
	if len(aws2.registered) != 1 {
		t.Errorf("the re-run registered another image: %d", len(aws2.registered))
	}
	out, err := c.ec2.DescribeImages(ctx, &awsec2.DescribeImagesInput{ImageIds: []string{crashedID}})
	if err != nil || len(out.Images) != 1 {
		t.Fatalf("describing %s: %v", crashedID, err)
	}
	if got := tagOf(out.Images[0].Tags, ec2.TagItemDigest); got != res.AMIs[0].ItemDigest {
		t.Errorf("adopted image tagged %s=%q, want %q", ec2.TagItemDigest, got, res.AMIs[0].ItemDigest)
	}
}
