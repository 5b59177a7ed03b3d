package ec2_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/internal/mototest"
)

// TestUninstallDeregistersAMIs: uninstall with a registrar deregisters the
// images the bundle's generations recorded that are still tagged by zdt
// for its name, and deletes their snapshots; the image another root
// registered under the same bundle name (not recorded here) and another
// bundle's image stay, with their snapshots. Without a registrar the
// recorded images are listed as left registered, and stay.
func TestUninstallDeregistersAMIs(t *testing.T) {
	m := mototest.Shared(t)
	ctx := context.Background()
	dir := t.TempDir()
	disk := func(n string, seed uint64) string {
		p := filepath.Join(dir, n, "node.raw")
		os.MkdirAll(filepath.Dir(p), 0o755)
		writeDisk(t, p, 4<<20, seed, []extent{{0, 1 << 20}})
		return p
	}
	d1, d2, d3, dO := disk("d1", 11), disk("d2", 12), disk("d3", 13), disk("dO", 14)
	v1, v2 := amiBundle(t, dir, "unplat", "1", d1), amiBundle(t, dir, "unplat", "2", d2)
	v3 := amiBundle(t, dir, "unplat", "3", d3)
	other := amiBundle(t, dir, "unother", "1", dO)
	c := newClients(t, m)
	root := filepath.Join(dir, "root")
	reg := newRegistrar(t, m, nil)

	r1, err := install(t, v1, root, reg, false)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := install(t, v2, root, reg, false)
	if err != nil {
		t.Fatal(err)
	}
	a1, a2 := r1.AMIs[0], r2.AMIs[0]
	// The same bundle name from another root, and another bundle.
	r3, err := install(t, v3, filepath.Join(dir, "root3"), reg, false)
	if err != nil {
		t.Fatal(err)
	}
	rO, err := install(t, other, filepath.Join(dir, "rootO"), reg, false)
	if err != nil {
		t.Fatal(err)
	}
	a3, aO := r3.AMIs[0], rO.AMIs[0]

	// Without a registrar: listed, left registered.
	rootL := filepath.Join(dir, "rootL")
	if _, err := install(t, v1, rootL, reg, false); err != nil {
		t.Fatal(err)
	}
	res, err := installer.Uninstall(ctx, installer.Options{Root: rootL})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.AMIsLeft) != 1 || res.AMIsLeft[0].ImageID != a1.ImageID || len(res.AMIsDeregistered) != 0 {
		t.Fatalf("uninstall without a registrar: left %+v, deregistered %+v", res.AMIsLeft, res.AMIsDeregistered)
	}
	if ids := imageIDs(c.images(t)); !slices.Contains(ids, a1.ImageID) {
		t.Fatalf("uninstall without a registrar deregistered %s: %v", a1.ImageID, ids)
	}

	res, err = installer.Uninstall(ctx, installer.Options{Root: root, AMIs: newRegistrar(t, m, nil)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range res.AMIsDeregistered {
		got = append(got, a.ImageID+" "+a.SnapshotID)
	}
	want := []string{a1.ImageID + " " + a1.SnapshotID, a2.ImageID + " " + a2.SnapshotID}
	slices.Sort(want)
	if !slices.Equal(got, want) || len(res.AMIsLeft) != 0 {
		t.Fatalf("deregistered %v, want %v (left %+v)", got, want, res.AMIsLeft)
	}
	ids := imageIDs(c.images(t))
	if slices.Contains(ids, a1.ImageID) || slices.Contains(ids, a2.ImageID) || !slices.Contains(ids, a3.ImageID) || !slices.Contains(ids, aO.ImageID) {
		t.Fatalf("images after uninstall: %v (deregistered %s %s; kept %s %s)", ids, a1.ImageID, a2.ImageID, a3.ImageID, aO.ImageID)
	}
	var snaps []string
	for _, s := range c.snapshots(t) {
		snaps = append(snaps, aws.ToString(s.SnapshotId))
	}
	if slices.Contains(snaps, a1.SnapshotID) || slices.Contains(snaps, a2.SnapshotID) || !slices.Contains(snaps, a3.SnapshotID) || !slices.Contains(snaps, aO.SnapshotID) {
		t.Fatalf("snapshots after uninstall: %v", snaps)
	}
}

func imageIDs(imgs []types.Image) []string {
	var out []string
	for _, im := range imgs {
		out = append(out, aws.ToString(im.ImageId))
	}
	return out
}
