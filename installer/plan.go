package installer

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
)

// Action is what an install does to one item.
type Action string

// Actions of a plan.
const (
	ActionAdd       Action = "add"
	ActionChange    Action = "change"
	ActionUnchanged Action = "unchanged"
	ActionRemove    Action = "remove"
	// ActionRepair: the item is unchanged in the bundle but its installed
	// file is missing or differs on disk.
	ActionRepair Action = "repair"
)

// Change is one line of a plan.
type Change struct {
	Action    Action `json:"action"`
	Component string `json:"component"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	From      string `json:"from,omitempty"` // installed digest
	To        string `json:"to,omitempty"`   // bundle digest
	Size      int64  `json:"size"`
	Target    string `json:"target,omitempty"`
}

// Plan compares a bundle with what is installed.
type Plan struct {
	Bundle       string `json:"bundle"` // name version
	BundleDigest string `json:"bundleDigest"`
	// Installed is the current generation (nil when nothing is installed).
	Installed *GenerationRef `json:"installed,omitempty"`
	Changes   []Change       `json:"changes"`
	// Beside are the other bundles installed in the root (by name), which
	// the plan leaves as they are.
	Beside []GenerationRef `json:"beside,omitempty"`
	// Releases are the Helm releases of the bundle's charts, with what
	// deploying would do (only with a Deployer).
	Releases []ReleaseChange `json:"releases,omitempty"`
	// AMIs are the machine images of the bundle's AMI items: register or
	// reuse, and deregister (--prune-amis) (only with an AMIRegistrar).
	AMIs []AMIChange `json:"amis,omitempty"`
	// amisRecorded: every AMI of the plan is reused as the current
	// generation records it.
	amisRecorded bool
	// Actions are the component actions installing runs, in order
	// (actions.go); --plan runs none.
	Actions []ActionRun `json:"actions,omitempty"`
}

// GenerationRef names a generation.
type GenerationRef struct {
	Number       int    `json:"generation"`
	Name         string `json:"name"`
	Version      string `json:"version"`
	BundleDigest string `json:"bundleDigest"`
}

// Counts returns the number of changes per action.
func (p *Plan) Counts() map[Action]int {
	m := map[Action]int{}
	for _, c := range p.Changes {
		m[c.Action]++
	}
	return m
}

// HasChanges reports whether applying the plan would change anything.
func (p *Plan) HasChanges() bool {
	if p.Installed == nil || p.Installed.BundleDigest != p.BundleDigest || releaseChanges(p.Releases) || p.amiChanges() {
		return true
	}
	for _, c := range p.Changes {
		if c.Action != ActionUnchanged {
			return true
		}
	}
	return false
}

// desiredItems lists a bundle's items as they will be recorded, reading
// each file and AMI item's manifest for its content digest and size, and
// returns the content of those items by key.
func desiredItems(ctx context.Context, a *bundle.Archive, g *bundle.Graph) ([]ItemState, map[string]bundle.Content, error) {
	var out []ItemState
	contents := map[string]bundle.Content{}
	for _, it := range g.Items {
		st := ItemState{Item: it}
		if it.Kind == manifests.KindFile || it.Kind == manifests.KindAMI {
			c, err := a.ItemContent(ctx, it)
			if err != nil {
				return nil, nil, err
			}
			st.FileDigest, st.FileSize = c.Digest.String(), c.Size
			contents[st.key()] = c
		}
		out = append(out, st)
	}
	return out, contents, nil
}

// makePlan compares desired items with the current generation and, for
// files, with what is on disk (size and content digest).
func makePlan(root *os.Root, cur *Generation, desired []ItemState, bundleName, bundleDigest string) (*Plan, error) {
	p := &Plan{Bundle: bundleName, BundleDigest: bundleDigest}
	installed := map[string]ItemState{}
	if cur != nil {
		p.Installed = &GenerationRef{Number: cur.Number, Name: cur.Name, Version: cur.Version, BundleDigest: cur.BundleDigest}
		for _, it := range cur.Items {
			installed[it.key()] = it
		}
	}
	seen := map[string]bool{}
	for _, it := range desired {
		seen[it.key()] = true
		c := Change{Component: it.Component, Kind: it.Kind, Name: it.Name, To: it.Digest, Size: it.Size, Target: it.Target}
		old, ok := installed[it.key()]
		switch {
		case !ok:
			c.Action = ActionAdd
		case old.Digest != it.Digest || old.Target != it.Target || old.Mode != it.Mode:
			c.Action, c.From = ActionChange, old.Digest
		default:
			c.Action, c.From = ActionUnchanged, old.Digest
			if it.Kind == manifests.KindFile {
				ok, err := fileMatches(root, it, old.Placed)
				if err != nil {
					return nil, err
				}
				if !ok {
					c.Action = ActionRepair
				}
			}
		}
		p.Changes = append(p.Changes, c)
	}
	if cur != nil {
		for _, it := range cur.Items {
			if !seen[it.key()] {
				p.Changes = append(p.Changes, Change{Action: ActionRemove, Component: it.Component, Kind: it.Kind, Name: it.Name, From: it.Digest, Size: it.Size, Target: it.Target})
			}
		}
	}
	return p, nil
}

// fileMatches reports whether a file item's target holds its content with
// its mode. A target whose inode, size and mtime are what zdt recorded when
// it placed it is not hashed again; any other target is hashed.
func fileMatches(root *os.Root, it ItemState, placed *Placed) (bool, error) {
	rel := strings.TrimPrefix(it.Target, "/")
	fi, err := root.Lstat(rel)
	if err != nil {
		if os.IsNotExist(err) {
			return false, nil
		}
		return false, fmt.Errorf("checking %s: %w", it.Target, err)
	}
	mode, _ := manifests.ParseMode(it.Mode)
	if !fi.Mode().IsRegular() || fi.Mode()&(fs.ModePerm|manifests.FileMode(manifests.SpecialBits)) != manifests.FileMode(mode) {
		return false, nil
	}
	if placed.matches(fi) {
		return true, nil
	}
	if fi.Size() != it.FileSize {
		return false, nil
	}
	d, err := hashFile(root, rel)
	if err != nil {
		return false, err
	}
	return d.String() == it.FileDigest, nil
}

// Placed is what zdt saw of a file right after placing it.
type Placed struct {
	Size    int64  `json:"size"`
	MTimeNs int64  `json:"mtimeNs"`
	Inode   uint64 `json:"inode"`
}

func placedOf(fi fs.FileInfo) *Placed {
	p := &Placed{Size: fi.Size(), MTimeNs: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		p.Inode = st.Ino
	}
	return p
}

func (p *Placed) matches(fi fs.FileInfo) bool {
	if p == nil {
		return false
	}
	q := placedOf(fi)
	return *p == *q
}
