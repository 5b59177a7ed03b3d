package installer

import (
	"context"
	"fmt"
	"sort"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
)

// AMI is one machine image an install registered in a cloud (or found
// registered for the same item digest and reused), as the generation
// records it and `zdt status` lists it.
type AMI struct {
	// Item is the bundle's AMI item name, ItemDigest its manifest digest
	// (what the cloud image is tagged with and found by).
	Item       string `json:"item"`
	ItemDigest string `json:"itemDigest"`
	// ImageID and Name are the registered image's id and name; SnapshotID
	// is the snapshot of its root volume.
	ImageID    string `json:"imageId"`
	Name       string `json:"name"`
	SnapshotID string `json:"snapshotId,omitempty"`
	// Region is where it is registered.
	Region string `json:"region,omitempty"`
	// Blocks is the number of 512 KiB blocks uploaded when this install
	// registered it (zero blocks are not uploaded; 0 for a reused image).
	Blocks int64 `json:"blocks,omitempty"`
}

// AMI actions in a plan.
const (
	// AMIRegister: no image is registered for the item digest: its disk is
	// uploaded as a snapshot and registered.
	AMIRegister Action = "register"
	// AMIReuse: an image registered for the same item digest is used as
	// it is; nothing is uploaded.
	AMIReuse Action = "reuse"
	// AMIDeregister: an image this bundle name registered that neither the
	// new nor the previous generation references (--prune-amis): it is
	// deregistered and its snapshots deleted.
	AMIDeregister Action = "deregister"
)

// AMIChange is one AMI line of a plan.
type AMIChange struct {
	Action Action `json:"action"`
	AMI
	// Size is the disk's raw size (register).
	Size int64 `json:"size,omitempty"`
}

// AMIItem is one AMI item of a bundle with its disk's content (size,
// digest, metadata), which OpenContent reads.
type AMIItem struct {
	Item    bundle.Item
	Content bundle.Content
}

// AMIBundle is what an AMIRegistrar registers: a bundle's identity (every
// image and snapshot is tagged with it) and its AMI items.
type AMIBundle struct {
	Name, Version, Root string
	Items               []AMIItem
	// Journal, when set, is where the registrar records each snapshot it
	// completed before registering an image from it, and what it checks
	// an image found by name but not tagged against (install sets it to
	// the install root's journal). Without one, nothing is journaled and
	// such an image is never adopted.
	Journal AMIJournal
}

// AMIRegistrar registers a bundle's AMI items as machine images in a cloud
// (package cloud/ec2 implements it for EC2; installer stays free of cloud
// SDKs).
//
// PlanAMIs only reads: for each item, the image registered for its digest
// (AMIReuse, with its id) or none (AMIRegister), and every image
// registered for the bundle's name. RegisterAMIs uploads and registers the
// AMIRegister items of the plan and returns every item's image, reused ones
// included; a failed upload leaves no registered image. DeregisterAMIs
// deregisters images and deletes their snapshots.
type AMIRegistrar interface {
	PlanAMIs(ctx context.Context, b AMIBundle) (plan []AMIChange, registered []AMI, err error)
	RegisterAMIs(ctx context.Context, a *bundle.Archive, b AMIBundle, plan []AMIChange) ([]AMI, error)
	DeregisterAMIs(ctx context.Context, amis []AMI) error
}

// amiBundle is the bundle being installed as an AMIRegistrar sees it.
func (r *run) amiBundle() AMIBundle {
	b := AMIBundle{Name: r.a.Config.Name, Version: r.a.Config.Version, Root: r.a.Root.Digest.String(), Journal: amiJournal{root: r.root}}
	for _, it := range r.desired {
		if it.Kind == manifests.KindAMI {
			b.Items = append(b.Items, AMIItem{Item: it.Item, Content: r.contents[it.key()]})
		}
	}
	return b
}

// planAMIs adds the registrar's AMI plan to p (reads only): register or
// reuse per AMI item and, with PruneAMIs, the images of the bundle's name
// that neither the new generation nor the one rollback would return to
// references.
func (r *run) planAMIs(ctx context.Context, p *Plan) error {
	if r.opts.AMIs == nil {
		return nil
	}
	b := r.amiBundle()
	plan, registered, err := r.opts.AMIs.PlanAMIs(ctx, b)
	if err != nil {
		return fmt.Errorf("planning the amis: %w", err)
	}
	p.AMIs = plan
	p.amisRecorded = r.cur != nil && sameAMIs(r.cur.AMIs, plan)
	if !r.opts.PruneAMIs {
		return nil
	}
	// Kept: what the bundle's items use now, what the current generation
	// recorded (the previous one once the new generation is recorded) and,
	// when no new generation will be recorded, the current generation's
	// previous one too.
	keep := map[string]bool{}
	for _, c := range plan {
		keep[c.ImageID] = true
	}
	var prev []*Generation
	if r.cur != nil {
		prev = append(prev, r.cur)
		if !p.HasChanges() && r.cur.Previous != 0 && r.root != nil {
			if g, err := (&state{root: r.root}).generation(r.cur.Previous); err == nil && g.Name == r.cur.Name {
				prev = append(prev, g)
			}
		}
	}
	for _, g := range prev {
		for _, a := range g.AMIs {
			keep[a.ImageID] = true
		}
	}
	var drop []AMIChange
	for _, a := range registered {
		if !keep[a.ImageID] {
			drop = append(drop, AMIChange{Action: AMIDeregister, AMI: a})
		}
	}
	sort.Slice(drop, func(i, j int) bool { return drop[i].ImageID < drop[j].ImageID })
	p.AMIs = append(p.AMIs, drop...)
	return nil
}

// sameAMIs reports whether every item of plan is reused as the image
// recorded for it.
func sameAMIs(recorded []AMI, plan []AMIChange) bool {
	ids := map[string]string{}
	for _, a := range recorded {
		ids[a.ItemDigest] = a.ImageID
	}
	for _, c := range plan {
		if c.Action != AMIReuse || ids[c.ItemDigest] != c.ImageID {
			return false
		}
	}
	return true
}

// amiChanges reports whether the AMI plan needs a new generation: an image
// to register, or one reused that the current generation does not record.
func (p *Plan) amiChanges() bool {
	for _, c := range p.AMIs {
		if c.Action == AMIRegister {
			return true
		}
	}
	return len(p.AMIs) > 0 && !p.amisRecorded
}

// registerAMIs registers the plan's AMIs (apply); without a registrar the
// current generation's images of items the bundle still has are carried
// over.
func (r *run) registerAMIs(ctx context.Context) error {
	if r.opts.AMIs == nil {
		if r.cur != nil {
			digests := map[string]bool{}
			for _, it := range r.desired {
				if it.Kind == manifests.KindAMI {
					digests[it.Digest] = true
				}
			}
			for _, a := range r.cur.AMIs {
				if digests[a.ItemDigest] {
					r.amis = append(r.amis, a)
				}
			}
		}
		return nil
	}
	var plan []AMIChange
	for _, c := range r.plan.AMIs {
		if c.Action != AMIDeregister {
			plan = append(plan, c)
		}
	}
	amis, err := r.opts.AMIs.RegisterAMIs(ctx, r.a, r.amiBundle(), plan)
	if err != nil {
		return fmt.Errorf("registering the amis: %w", err)
	}
	r.amis = amis
	return nil
}

// pruneAMIs deregisters the plan's AMIDeregister images (after the
// generation is recorded, or when nothing else changes).
func (r *run) pruneAMIs(ctx context.Context, p *Plan) error {
	if r.opts.AMIs == nil {
		return nil
	}
	var drop []AMI
	for _, c := range p.AMIs {
		if c.Action == AMIDeregister {
			drop = append(drop, c.AMI)
		}
	}
	if len(drop) == 0 {
		return nil
	}
	if err := r.opts.AMIs.DeregisterAMIs(ctx, drop); err != nil {
		return fmt.Errorf("pruning the amis: %w", err)
	}
	return nil
}
