package installer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"sort"
	"time"

	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
)

// BackupKind says what a cluster backup holds.
type BackupKind string

const (
	// BackupEtcd is an etcd snapshot in etcdctl snapshot save's format
	// (the database, then its sha256), restorable with etcdutl snapshot
	// restore.
	BackupEtcd BackupKind = "etcd"
	// BackupObjects is the export of every object of the releases about
	// to change, read from the cluster, as YAML documents: what an
	// install without etcd access keeps.
	BackupObjects BackupKind = "objects"
)

// DefaultKeepBackups is how many cluster backups Install keeps.
const DefaultKeepBackups = 3

// ClusterBackup is the backup of the cluster an install took before it
// changed any release, as the generation records it and status lists it.
type ClusterBackup struct {
	// Digest and Size are the file's sha256 and length (no digest in
	// status for a backup no recorded generation names).
	Digest string `json:"digest,omitempty"`
	// Generation is the generation whose install took it.
	Generation int        `json:"generation"`
	Kind       BackupKind `json:"kind"`
	// Objects counts the objects of an export.
	Objects int `json:"objects,omitempty"`
	// Path is the file, relative to the root
	// (var/lib/zdt/backups/N-etcd.db or N-objects.yaml).
	Path string `json:"path"`
	// Recorded is false in status for a backup no recorded generation
	// names (its install failed after taking it).
	Recorded bool  `json:"recorded"`
	Size     int64 `json:"size"`
	// Source is the etcd endpoint the snapshot came from, or the
	// releases whose objects were exported.
	Source string `json:"source,omitempty"`
	// Time is when it was taken (status: the file's modification time
	// when no generation recorded it).
	Time time.Time `json:"time"`
}

// BackupInfo is what a Backuper says about the backup it wrote.
type BackupInfo struct {
	Source  string
	Objects int
}

// Backuper is a Deployer that backs the cluster up before an install
// changes any of its releases (package cluster: an etcd snapshot, or the
// releases' objects without etcd access).
type Backuper interface {
	// BackupKind says what Backup writes.
	BackupKind() BackupKind
	// Backup streams the backup to w. A failure stops the install before
	// any release changes; w's file is then not kept.
	Backup(ctx context.Context, w io.Writer, changes []ReleaseChange) (BackupInfo, error)
}

var backupSuffix = map[BackupKind]string{BackupEtcd: layout.EtcdSnapshotSuffix, BackupObjects: layout.ObjectsExportSuffix}

// backupCluster takes the cluster backup of an install whose release plan
// changes something (install, upgrade or uninstall), before any release
// changes (see takeClusterBackup), and keeps it for the generation.
func (r *run) backupCluster(ctx context.Context, changes []ReleaseChange) error {
	b, err := takeClusterBackup(ctx, r.root, r.opts, r.next, changes)
	if b != nil {
		r.backup = b
	}
	return err
}

// takeClusterBackup takes the cluster backup that generation next's
// release changes need, when opts.Deployer is a Backuper and changes
// changes something (else it returns nil, nil): written under the root
// atomically (temp, fsync, rename; a failed backup leaves no file and the
// caller must stop before any release changes), hashed while it is
// written. Then only the newest opts.KeepBackups cluster backups stay.
// Install, Rollback and Uninstall all take it the same way and record it
// in generation next.
func takeClusterBackup(ctx context.Context, root *os.Root, opts Options, next int, changes []ReleaseChange) (*ClusterBackup, error) {
	b, ok := opts.Deployer.(Backuper)
	if !ok || !releaseChanges(changes) {
		return nil, nil
	}
	kind := b.BackupKind()
	suffix, ok := backupSuffix[kind]
	if !ok {
		return nil, fmt.Errorf("backing up the cluster: unknown backup kind %q", kind)
	}
	if err := root.MkdirAll(layout.BackupsDir, 0o755); err != nil {
		return nil, fmt.Errorf("backing up the cluster: %w", err)
	}
	if err := fsutil.RemoveTemps(root, []string{layout.BackupsDir}); err != nil {
		return nil, err
	}
	rel := layout.ClusterBackup(next, suffix)
	opts.Logger.Info("backing up the cluster before changing its releases", "kind", kind, "path", "/"+rel)
	start := time.Now()
	var info BackupInfo
	h := sha256.New()
	// 0600: a snapshot or an export holds the cluster's Secrets.
	n, err := fsutil.WriteAtomic(ctx, root, rel, 0o600, func(w io.Writer) error {
		var err error
		info, err = b.Backup(ctx, io.MultiWriter(w, h), changes)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("backing up the cluster (%s) before changing its releases: %w", kind, err)
	}
	cb := &ClusterBackup{Generation: next, Kind: kind, Path: rel, Digest: "sha256:" + hex.EncodeToString(h.Sum(nil)),
		Size: n, Source: info.Source, Objects: info.Objects, Time: start.UTC().Truncate(time.Second), Recorded: true}
	opts.Logger.Info("cluster backed up", "kind", kind, "path", "/"+rel, "size", n, "took", time.Since(start).Round(time.Millisecond))
	return cb, pruneClusterBackups(root, opts.KeepBackups)
}

// clusterBackupFiles lists the cluster backups in layout.BackupsDir,
// newest generation first.
func clusterBackupFiles(root *os.Root) ([]ClusterBackup, error) {
	f, err := root.Open(layout.BackupsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing cluster backups: %w", err)
	}
	defer f.Close()
	ents, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("listing cluster backups: %w", err)
	}
	var out []ClusterBackup
	for _, e := range ents {
		n, suffix, ok := layout.ParseClusterBackup(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		b := ClusterBackup{Generation: n, Kind: BackupEtcd, Path: path.Join(layout.BackupsDir, e.Name())}
		if suffix == layout.ObjectsExportSuffix {
			b.Kind = BackupObjects
		}
		if fi, err := e.Info(); err == nil {
			b.Size, b.Time = fi.Size(), fi.ModTime().UTC().Truncate(time.Second)
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Generation != out[j].Generation {
			return out[i].Generation > out[j].Generation
		}
		return out[i].Kind < out[j].Kind
	})
	return out, nil
}

// pruneClusterBackups keeps the cluster backups of the newest keep
// generations (default DefaultKeepBackups) and removes the others.
func pruneClusterBackups(root *os.Root, keep int) error {
	if keep <= 0 {
		keep = DefaultKeepBackups
	}
	all, err := clusterBackupFiles(root)
	if err != nil {
		return err
	}
	gens := map[int]bool{}
	for _, b := range all {
		if len(gens) < keep {
			gens[b.Generation] = true
		}
		if gens[b.Generation] {
			continue
		}
		if err := root.Remove(b.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("pruning cluster backup %s: %w", b.Path, err)
		}
	}
	return fsutil.SyncDir(root, layout.BackupsDir)
}

// listClusterBackups is what status shows: every cluster backup on disk,
// with the digest, source and time its generation recorded when one did.
func listClusterBackups(root *os.Root, st *state) ([]ClusterBackup, error) {
	files, err := clusterBackupFiles(root)
	if err != nil {
		return nil, err
	}
	for i, f := range files {
		g, err := st.generation(f.Generation)
		if err != nil || g.Backup == nil || g.Backup.Path != f.Path {
			continue
		}
		rec := *g.Backup
		rec.Recorded = true
		if rec.Size != f.Size { // changed since: say what is there
			rec.Digest, rec.Size = "", f.Size
		}
		files[i] = rec
	}
	return files, nil
}
