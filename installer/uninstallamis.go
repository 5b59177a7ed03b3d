package installer

import (
	"context"
	"fmt"
	"sort"
)

// recordedAMIs are the images the generations of bundle name recorded
// (its installs and rollbacks; what it may have left registered), by
// image id and region.
func (s *state) recordedAMIs(name string) ([]AMI, error) {
	nums, err := s.generations()
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var out []AMI
	for _, n := range nums {
		g, err := s.generation(n)
		if err != nil {
			return nil, err
		}
		if g.Name != name || g.Uninstalled {
			continue
		}
		for _, a := range g.AMIs {
			if k := a.Region + "/" + a.ImageID; !seen[k] {
				seen[k] = true
				out = append(out, a)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region+out[i].ImageID < out[j].Region+out[j].ImageID })
	return out, nil
}

// uninstallAMIs deals with the images the bundle cur's generations
// recorded. With opts.AMIs it deregisters those the registrar still finds
// registered for the bundle's name (tagged by zdt) in its region, and
// deletes their snapshots: an image zdt did not tag for this bundle, or
// that no generation of it recorded, is never touched. What it did not
// deregister (another region, or no registrar) is returned as left.
func uninstallAMIs(ctx context.Context, st *state, opts Options, cur *Generation) (deregistered, left []AMI, err error) {
	recorded, err := st.recordedAMIs(cur.Name)
	if err != nil || len(recorded) == 0 {
		return nil, nil, err
	}
	if opts.AMIs == nil {
		return nil, recorded, nil
	}
	_, registered, err := opts.AMIs.PlanAMIs(ctx, AMIBundle{Name: cur.Name, Version: cur.Version, Root: cur.BundleDigest})
	if err != nil {
		return nil, nil, fmt.Errorf("uninstalling the amis of %s: %w", cur.Name, err)
	}
	region := ""
	if r, ok := opts.AMIs.(interface{ Region() string }); ok {
		region = r.Region()
	}
	found := map[string]AMI{}
	for _, a := range registered {
		found[a.ImageID] = a
	}
	for _, a := range recorded {
		if a.Region != "" && region != "" && a.Region != region {
			left = append(left, a) // another region's
			continue
		}
		r, ok := found[a.ImageID]
		if !ok {
			continue // deregistered already (--prune-amis, or by hand)
		}
		if r.SnapshotID == "" {
			r.SnapshotID = a.SnapshotID
		}
		if r.Item == "" {
			r.Item = a.Item
		}
		deregistered = append(deregistered, r)
	}
	if len(deregistered) == 0 {
		return nil, left, nil
	}
	if err := opts.AMIs.DeregisterAMIs(ctx, deregistered); err != nil {
		return nil, nil, fmt.Errorf("uninstalling the amis of %s: %w", cur.Name, err)
	}
	return deregistered, left, nil
}
