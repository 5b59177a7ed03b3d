package ec2

import (
	"context"
	"slices"
	"sync"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsec2 "github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/installer"
)

// unfilteredEC2 answers DescribeSnapshots with every snapshot it holds,
// whatever the filters say (a broken or hostile endpoint), and records
// what DeleteSnapshot was asked to delete.
type unfilteredEC2 struct {
	EC2API
	snaps   []types.Snapshot
	mu      sync.Mutex
	deleted []string
}

func (e *unfilteredEC2) DescribeSnapshots(ctx context.Context, in *awsec2.DescribeSnapshotsInput, opts ...func(*awsec2.Options)) (*awsec2.DescribeSnapshotsOutput, error) {
	return &awsec2.DescribeSnapshotsOutput{Snapshots: e.snaps}, nil
}

func (e *unfilteredEC2) DeleteSnapshot(ctx context.Context, in *awsec2.DeleteSnapshotInput, opts ...func(*awsec2.Options)) (*awsec2.DeleteSnapshotOutput, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.deleted = append(e.deleted, aws.ToString(in.SnapshotId))
	return &awsec2.DeleteSnapshotOutput{}, nil
}

// TestLeftoversOnlyOurs: the snapshots an earlier run left are found with
// a tag filter; an endpoint that ignores it and lists the account's other
// snapshots (another bundle's, another item's, someone else's) does not
// get them deleted: only a snapshot carrying both tags is.
func TestLeftoversOnlyOurs(t *testing.T) {
	snap := func(id string, tags ...string) types.Snapshot {
		s := types.Snapshot{SnapshotId: aws.String(id)}
		for i := 0; i+1 < len(tags); i += 2 {
			s.Tags = append(s.Tags, types.Tag{Key: aws.String(tags[i]), Value: aws.String(tags[i+1])})
		}
		return s
	}
	const d = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	e := &unfilteredEC2{snaps: []types.Snapshot{
		snap("snap-ours", TagBundle, "plat", TagItemDigest, d),
		snap("snap-other-bundle", TagBundle, "other", TagItemDigest, d),
		snap("snap-other-item", TagBundle, "plat", TagItemDigest, "sha256:22"),
		snap("snap-untagged"),
		snap("snap-bundle-only", TagBundle, "plat"),
	}}
	r, err := New(context.Background(), Options{Region: "eu-west-1", EC2: e, EBS: struct{ EBSAPI }{}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.deleteLeftovers(context.Background(), "plat", d); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(e.deleted, []string{"snap-ours"}) {
		t.Fatalf("deleted %v, want only snap-ours", e.deleted)
	}
}

// unfilteredImages answers DescribeImages with every image it holds,
// whatever the filters say.
type unfilteredImages struct {
	EC2API
	imgs []types.Image
}

func (e *unfilteredImages) DescribeImages(ctx context.Context, in *awsec2.DescribeImagesInput, opts ...func(*awsec2.Options)) (*awsec2.DescribeImagesOutput, error) {
	return &awsec2.DescribeImagesOutput{Images: e.imgs}, nil
}

// TestPlanOnlyBundleImages: an endpoint that ignores DescribeImages'
// filters does not make another bundle's or someone else's image one of
// the bundle's (which --prune-amis would deregister), nor an image of
// another name a candidate for the item.
func TestPlanOnlyBundleImages(t *testing.T) {
	img := func(id, name string, tags ...string) types.Image {
		im := types.Image{ImageId: aws.String(id), Name: aws.String(name), State: types.ImageStateAvailable}
		for i := 0; i+1 < len(tags); i += 2 {
			im.Tags = append(im.Tags, types.Tag{Key: aws.String(tags[i]), Value: aws.String(tags[i+1])})
		}
		return im
	}
	e := &unfilteredImages{imgs: []types.Image{
		img("ami-ours", "node-111111111111", TagBundle, "plat", TagItemDigest, "sha256:old"),
		img("ami-other", "x-222222222222", TagBundle, "other", TagItemDigest, "sha256:other"),
		img("ami-someone", "prod-db"),
	}}
	r, err := New(context.Background(), Options{Region: "eu-west-1", EC2: e, EBS: struct{ EBSAPI }{}})
	if err != nil {
		t.Fatal(err)
	}
	plan, registered, err := r.PlanAMIs(context.Background(), installerBundle("plat"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, a := range registered {
		ids = append(ids, a.ImageID)
	}
	if !slices.Equal(ids, []string{"ami-ours"}) {
		t.Errorf("registered for the bundle: %v, want only ami-ours", ids)
	}
	if len(plan) != 1 || plan[0].Action != "register" {
		t.Errorf("plan %+v, want the item registered", plan)
	}
}

// installerBundle is bundle name with one AMI item, node, whose image
// name is node-333333333333 (no image above has it).
func installerBundle(name string) installer.AMIBundle {
	it := installer.AMIItem{Item: bundle.Item{Name: "node", Kind: "ami", Digest: "sha256:3333333333333333333333333333333333333333333333333333333333333333"},
		Content: bundle.Content{Size: 1 << 20, AMI: &bundle.AMIConfig{Name: "node"}}}
	return installer.AMIBundle{Name: name, Version: "1", Root: "sha256:4444444444444444444444444444444444444444444444444444444444444444", Items: []installer.AMIItem{it}}
}
