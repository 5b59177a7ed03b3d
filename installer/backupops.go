package installer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"

	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
)

// rollbackChanges are the release changes of going from cur to prev, as
// the cluster backup taken before a rollback sees them: a release both
// have that differs is rolled back, one only cur has is uninstalled, one
// only prev has is installed again. None when nothing differs.
func rollbackChanges(cur, prev []Release) []ReleaseChange {
	if !releasesDiffer(cur, prev) {
		return nil
	}
	byKey := map[string]Release{}
	for _, r := range prev {
		byKey[r.Namespace+"/"+r.Name] = r
	}
	var out []ReleaseChange
	seen := map[string]bool{}
	for _, r := range cur {
		k := r.Namespace + "/" + r.Name
		seen[k] = true
		p, ok := byKey[k]
		switch {
		case !ok:
			out = append(out, ReleaseChange{Action: ReleaseUninstall, Release: r})
		case releasesDiffer([]Release{r}, []Release{p}):
			out = append(out, ReleaseChange{Action: ReleaseRollback, Release: r})
		default:
			out = append(out, ReleaseChange{Action: ReleaseUnchanged, Release: r})
		}
	}
	for _, r := range prev {
		if !seen[r.Namespace+"/"+r.Name] {
			out = append(out, ReleaseChange{Action: ReleaseInstall, Release: r})
		}
	}
	return out
}

// uninstallChanges are the changes of uninstalling rs (reverse order).
func uninstallChanges(rs []Release) []ReleaseChange {
	out := make([]ReleaseChange, 0, len(rs))
	for i := len(rs) - 1; i >= 0; i-- {
		out = append(out, ReleaseChange{Action: ReleaseUninstall, Release: rs[i]})
	}
	return out
}

// recordUninstall records the uninstall of cur as generation
// backup.Generation, marked Uninstalled and naming backup, without making
// it current: the backup is recorded as an install's is, and its number
// is not given to another generation. (With cur's own backup it turns
// cur's record into that of an uninstalled generation: removeState.)
func (s *state) recordUninstall(cur *Generation, backup *ClusterBackup, toolVersion string) error {
	prev := cur.Number
	if backup.Generation == cur.Number {
		prev = cur.Previous
	}
	g := Generation{Number: backup.Generation, BundleDigest: cur.BundleDigest, Name: cur.Name, Version: cur.Version,
		ToolVersion: toolVersion, Previous: prev, Backup: backup, Uninstalled: true}
	b, err := json.MarshalIndent(&g, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(s.root, layout.Generation(g.Number), b, 0o644); err != nil {
		return fmt.Errorf("recording the uninstall of %s as generation %d: %w", cur.Name, g.Number, err)
	}
	return nil
}

// removeState removes zdt's state directory when the last bundle is
// uninstalled. The cluster backups stay, with the generation records that
// name them (so status still lists them recorded, and the next install
// numbers its generation after them); the rest goes. Without cluster
// backups the whole directory goes.
func removeState(root *os.Root) error {
	keep, err := clusterBackupFiles(root)
	if err != nil {
		return err
	}
	if len(keep) == 0 {
		if err := root.RemoveAll(StateDir); err != nil {
			return fmt.Errorf("removing %s: %w", StateDir, err)
		}
		return nil
	}
	kept := map[string]bool{layout.BackupsDir: true, layout.GenerationsDir: true}
	st := &state{root: root}
	for _, b := range keep {
		kept[b.Path] = true
		g, err := st.generation(b.Generation)
		if err != nil || g.Backup == nil || g.Backup.Path != b.Path {
			continue // not recorded: status says so
		}
		kept[layout.Generation(b.Generation)] = true
		if g.Uninstalled {
			continue
		}
		// What is left of an install: the record of its backup.
		if err := st.recordUninstall(g, g.Backup, g.ToolVersion); err != nil {
			return err
		}
	}
	for _, dir := range []string{StateDir, layout.BackupsDir, layout.GenerationsDir} {
		f, err := root.Open(dir)
		if err != nil {
			return fmt.Errorf("removing %s: %w", StateDir, err)
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return fmt.Errorf("removing %s: %w", StateDir, err)
		}
		for _, n := range names {
			p := path.Join(dir, n)
			if kept[p] {
				continue
			}
			if err := root.RemoveAll(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return fmt.Errorf("removing %s: %w", p, err)
			}
		}
		if err := fsutil.SyncDir(root, dir); err != nil {
			return err
		}
	}
	return nil
}
