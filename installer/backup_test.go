package installer

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/layout"
)

// fakeBackuper is a Deployer and Backuper without a cluster: its plan
// says action for one release, its backup writes data (then fails with
// fail), and it records the order of the calls.
type fakeBackuper struct {
	action Action
	data   string
	fail   error
	calls  []string
	root   string
	next   int
}

func (f *fakeBackuper) PlanReleases(context.Context, *bundle.Archive, *bundle.Graph, []Release) ([]ReleaseChange, error) {
	return []ReleaseChange{{Action: f.action, Release: Release{Name: "r", Namespace: "ns", Revision: 1}}}, nil
}

func (f *fakeBackuper) Deploy(_ context.Context, _ *bundle.Archive, cs []ReleaseChange) ([]Release, error) {
	// The backup is complete on disk before any release changes.
	_, err := os.Stat(filepath.Join(f.root, layout.ClusterBackup(f.next, layout.EtcdSnapshotSuffix)))
	f.calls = append(f.calls, "deploy backup-present="+map[bool]string{true: "yes", false: "no"}[err == nil])
	return []Release{cs[0].Release}, nil
}

func (f *fakeBackuper) BackupKind() BackupKind { return BackupEtcd }

func (f *fakeBackuper) Backup(_ context.Context, w io.Writer, _ []ReleaseChange) (BackupInfo, error) {
	f.calls = append(f.calls, "backup")
	if _, err := io.WriteString(w, f.data); err != nil {
		return BackupInfo{}, err
	}
	return BackupInfo{Source: "fake"}, f.fail
}

func installWith(t *testing.T, archive, root string, d Deployer, keep int) (Result, error) {
	t.Helper()
	a, err := bundle.Open(context.Background(), archive)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	return Install(context.Background(), a, Options{Root: root, ToolVersion: "test", Deployer: d, KeepBackups: keep})
}

func backupNames(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(root, layout.BackupsDir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestClusterBackupBeforeDeploy: an install whose releases change backs
// the cluster up before it deploys (the file is complete on disk when
// Deploy runs), records its sha256 and size in the generation and lists
// it in status; one whose releases are unchanged takes none; only the
// newest KeepBackups stay; a backup that fails part-way stops the install
// before any release changes, leaving no file (not even a temp file) and
// no generation.
func TestClusterBackupBeforeDeploy(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	v1 := release{version: "1", files: map[string][]byte{"/etc/a": []byte("1")}}.build(t, dir)

	f := &fakeBackuper{action: ReleaseInstall, data: "snapshot of generation 1", root: root, next: 1}
	res, err := installWith(t, v1, root, f, 2)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.calls, ",") != "backup,deploy backup-present=yes" {
		t.Fatalf("calls = %v, want the backup on disk before the deploy", f.calls)
	}
	sum := sha256.Sum256([]byte(f.data))
	g, err := (&state{root: openRoot(t, root)}).generation(1)
	if err != nil {
		t.Fatal(err)
	}
	want := ClusterBackup{Generation: 1, Kind: BackupEtcd, Path: "var/lib/zdt/backups/1-etcd.db", Digest: "sha256:" + hex.EncodeToString(sum[:]),
		Size: int64(len(f.data)), Source: "fake", Recorded: true}
	if g.Backup == nil || g.Backup.Time.IsZero() || res.Backup == nil {
		t.Fatalf("generation 1 records backup %+v (result %+v)", g.Backup, res.Backup)
	}
	got := *g.Backup
	got.Time = want.Time
	if got != want {
		t.Fatalf("generation 1 records %+v, want %+v", got, want)
	}
	if b, err := os.ReadFile(filepath.Join(root, want.Path)); err != nil || string(b) != f.data {
		t.Fatalf("backup file: %q %v", b, err)
	}
	if fi, _ := os.Stat(filepath.Join(root, want.Path)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup mode %v, want 0600 (it holds the cluster's Secrets)", fi.Mode())
	}

	// Nothing changes: no backup.
	f.action, f.calls = ReleaseUnchanged, nil
	if _, err := installWith(t, v1, root, f, 2); err != nil || len(f.calls) != 0 {
		t.Fatalf("re-run: calls %v, %v", f.calls, err)
	}

	// Two upgrades: keep 2 drops generation 1's.
	for n, v := range []string{"2", "3"} {
		f.action, f.calls, f.next, f.data = ReleaseUpgrade, nil, n+2, "snapshot of generation "+v
		bv := release{version: v, files: map[string][]byte{"/etc/a": []byte(v)}}.build(t, dir)
		if _, err := installWith(t, bv, root, f, 2); err != nil {
			t.Fatal(err)
		}
	}
	if got := strings.Join(backupNames(t, root), " "); got != "2-etcd.db 3-etcd.db" {
		t.Fatalf("backups after keep 2: %s", got)
	}
	st, err := GetStatus(context.Background(), root)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Backups) != 2 || st.Backups[0].Generation != 3 || !st.Backups[0].Recorded || st.Backups[0].Digest == "" || st.Backups[1].Generation != 2 {
		t.Fatalf("status lists backups %+v", st.Backups)
	}

	// A backup that fails after writing part of it.
	f.calls, f.next, f.fail = nil, 4, errors.New("stream cut")
	v4 := release{version: "4", files: map[string][]byte{"/etc/a": []byte("4")}}.build(t, dir)
	if _, err := installWith(t, v4, root, f, 2); err == nil || !strings.Contains(err.Error(), "stream cut") {
		t.Fatalf("install with a failing backup: %v", err)
	}
	if strings.Join(f.calls, ",") != "backup" {
		t.Fatalf("calls = %v, want no deploy after a failed backup", f.calls)
	}
	if got := strings.Join(backupNames(t, root), " "); got != "2-etcd.db 3-etcd.db" {
		t.Fatalf("backups after a failed one: %s", got)
	}
	if _, err := os.Stat(filepath.Join(root, layout.Generation(4))); err == nil {
		t.Fatal("a failed backup recorded generation 4")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/a")); string(b) != "3" {
		t.Fatalf("a failed backup changed files: /etc/a = %q", b)
	}
}

func openRoot(t *testing.T, dir string) *os.Root {
	t.Helper()
	r, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestParseClusterBackup: only N-etcd.db and N-objects.yaml with a
// positive generation are cluster backups; the per-generation directories,
// temp files and look-alikes are not (prune never removes them).
func TestParseClusterBackup(t *testing.T) {
	for name, want := range map[string]int{
		"3-etcd.db": 3, "12-objects.yaml": 12,
		"3": 0, "0-etcd.db": 0, "-1-etcd.db": 0, "+1-etcd.db": 0, "01-etcd.db": 0, "x-etcd.db": 0, "-etcd.db": 0,
		".zdt-tmp-3-etcd.db-abc": 0, "3-etcd.db.bak": 0, "3-objects.yml": 0,
	} {
		n, _, ok := layout.ParseClusterBackup(name)
		if ok != (want > 0) || n != want {
			t.Errorf("ParseClusterBackup(%q) = %d %v, want %d", name, n, ok, want)
		}
	}
}
