package installer

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/layout"
)

// fakeReleaseManager is a fakeBackuper that also rolls releases back and
// uninstalls them, recording each call with whether generation next's
// backup was complete on disk by then.
type fakeReleaseManager struct{ fakeBackuper }

func (f *fakeReleaseManager) present() string {
	_, err := os.Stat(filepath.Join(f.root, layout.ClusterBackup(f.next, layout.EtcdSnapshotSuffix)))
	return map[bool]string{true: "yes", false: "no"}[err == nil]
}

// Deploy deploys revision next of the release.
func (f *fakeReleaseManager) Deploy(ctx context.Context, a *bundle.Archive, cs []ReleaseChange) ([]Release, error) {
	rs, err := f.fakeBackuper.Deploy(ctx, a, cs)
	if err == nil {
		rs[0].Revision = f.next
	}
	return rs, err
}

func (f *fakeReleaseManager) RollbackReleases(_ context.Context, cur, prev []Release, _ OpenBundle) ([]Release, []ReleaseChange, error) {
	f.calls = append(f.calls, "rollback backup-present="+f.present())
	return prev, []ReleaseChange{{Action: ReleaseRollback, Release: prev[0]}}, nil
}

func (f *fakeReleaseManager) UninstallReleases(_ context.Context, rs []Release) ([]ReleaseChange, error) {
	f.calls = append(f.calls, "uninstall backup-present="+f.present())
	return []ReleaseChange{{Action: ReleaseUninstall, Release: rs[0]}}, nil
}

// TestClusterBackupBeforeRollbackAndUninstall: rollback and uninstall back
// the cluster up as install does before they change a release (the file
// complete on disk first, recorded in the generation they write, pruned to
// KeepBackups); a failing backup stops either before any release or file
// changes; the last uninstall keeps the backups (status lists them,
// recorded), and the next install numbers its generation after them.
func TestClusterBackupBeforeRollbackAndUninstall(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	f := &fakeReleaseManager{fakeBackuper{root: root}}
	for n, v := range []string{"1", "2"} {
		f.action, f.next, f.data = ReleaseUpgrade, n+1, "snapshot before v"+v
		if n == 0 {
			f.action = ReleaseInstall
		}
		b := release{version: v, files: map[string][]byte{"/etc/a": []byte(v)}}.build(t, dir)
		if _, err := installWith(t, b, root, f, 2); err != nil {
			t.Fatal(err)
		}
	}
	opts := Options{Root: root, ToolVersion: "test", Deployer: f, KeepBackups: 2}

	// A rollback whose backup fails changes nothing.
	f.calls, f.next, f.data, f.fail = nil, 3, "snapshot before the rollback", errors.New("etcd went away")
	if _, err := Rollback(ctx, opts); err == nil || !strings.Contains(err.Error(), "etcd went away") {
		t.Fatalf("rollback with a failing backup: %v", err)
	}
	if strings.Join(f.calls, ",") != "backup" {
		t.Fatalf("calls = %v, want no release change after a failed backup", f.calls)
	}
	if _, err := os.Stat(filepath.Join(root, layout.Generation(3))); err == nil {
		t.Fatal("a failed backup recorded generation 3")
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/a")); string(b) != "2" {
		t.Fatalf("a failed backup changed files: /etc/a = %q", b)
	}
	if got := strings.Join(backupNames(t, root), " "); got != "1-etcd.db 2-etcd.db" {
		t.Fatalf("backups after a failed one: %s", got)
	}

	// The rollback: backup first, recorded in generation 3, keep 2.
	f.calls, f.fail = nil, nil
	res, err := Rollback(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.calls, ",") != "backup,rollback backup-present=yes" {
		t.Fatalf("calls = %v, want the backup on disk before the rollback", f.calls)
	}
	g3, err := (&state{root: openRoot(t, root)}).generation(3)
	if err != nil {
		t.Fatal(err)
	}
	if g3.Backup == nil || g3.Backup.Generation != 3 || g3.Backup.Path != "var/lib/zdt/backups/3-etcd.db" || g3.Backup.Size != int64(len(f.data)) ||
		res.Backup == nil || *res.Backup != *g3.Backup {
		t.Fatalf("generation 3 records backup %+v (result %+v)", g3.Backup, res.Backup)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/a")); string(b) != "1" {
		t.Fatalf("/etc/a after the rollback = %q", b)
	}
	if got := strings.Join(backupNames(t, root), " "); got != "2-etcd.db 3-etcd.db" {
		t.Fatalf("backups after the rollback with keep 2: %s", got)
	}

	// An uninstall whose backup fails changes nothing.
	f.calls, f.next, f.data, f.fail = nil, 4, "snapshot before the uninstall", errors.New("etcd went away")
	if _, err := Uninstall(ctx, opts); err == nil || !strings.Contains(err.Error(), "etcd went away") {
		t.Fatalf("uninstall with a failing backup: %v", err)
	}
	if strings.Join(f.calls, ",") != "backup" {
		t.Fatalf("calls = %v, want no release change after a failed backup", f.calls)
	}
	if st, err := GetStatus(ctx, root); err != nil || !st.Installed {
		t.Fatalf("a failed backup uninstalled the bundle: %+v %v", st, err)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "etc/a")); string(b) != "1" {
		t.Fatalf("a failed backup changed files: /etc/a = %q", b)
	}

	// The uninstall: backup first, recorded, the state gone but the backups.
	f.calls, f.fail = nil, nil
	res, err = Uninstall(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.calls, ",") != "backup,uninstall backup-present=yes" {
		t.Fatalf("calls = %v, want the backup on disk before the uninstall", f.calls)
	}
	if res.Backup == nil || res.Backup.Generation != 4 || res.Backup.Size != int64(len(f.data)) {
		t.Fatalf("uninstall's backup = %+v", res.Backup)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/a")); !os.IsNotExist(err) {
		t.Fatalf("/etc/a after uninstall: %v", err)
	}
	if got := strings.Join(backupNames(t, root), " "); got != "3-etcd.db 4-etcd.db" {
		t.Fatalf("backups after the uninstall with keep 2: %s", got)
	}
	var left []string
	filepath.WalkDir(filepath.Join(root, StateDir), func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			r, _ := filepath.Rel(root, p)
			left = append(left, r)
		}
		return nil
	})
	if want := "var/lib/zdt/backups/3-etcd.db var/lib/zdt/backups/4-etcd.db var/lib/zdt/generations/3.json var/lib/zdt/generations/4.json"; strings.Join(left, " ") != want {
		t.Fatalf("left under the state dir: %v, want %s", left, want)
	}
	g4, err := (&state{root: openRoot(t, root)}).generation(4)
	if err != nil || !g4.Uninstalled || g4.Backup == nil || *g4.Backup != *res.Backup || g4.Previous != 3 {
		t.Fatalf("generation 4 = %+v %v, want the uninstall's record", g4, err)
	}
	st, err := GetStatus(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	if st.Installed || len(st.Backups) != 2 || st.Backups[0].Generation != 4 || !st.Backups[0].Recorded || st.Backups[0].Digest != res.Backup.Digest ||
		st.Backups[1].Generation != 3 || !st.Backups[1].Recorded {
		t.Fatalf("status after uninstall: %+v", st)
	}

	// Installing again: generation 5, its history without the uninstall.
	f.action, f.calls, f.next, f.data = ReleaseInstall, nil, 5, "snapshot before v3"
	v3 := release{version: "3", files: map[string][]byte{"/etc/a": []byte("3")}}.build(t, dir)
	if res, err := installWith(t, v3, root, f, 2); err != nil || res.Generation != 5 {
		t.Fatalf("install after uninstall: generation %d, %v", res.Generation, err)
	}
	if st, err := GetStatus(ctx, root); err != nil || len(st.History) != 1 || st.History[0] != 5 {
		t.Fatalf("history after reinstall: %v %v", st.History, err)
	}
}

// TestRollbackChanges: what the backup before a rollback is told changes.
func TestRollbackChanges(t *testing.T) {
	a1 := Release{Name: "a", Namespace: "n", Revision: 1}
	a2 := Release{Name: "a", Namespace: "n", Revision: 2}
	b := Release{Name: "b", Namespace: "n", Revision: 1}
	c := Release{Name: "c", Namespace: "n", Revision: 1}
	if got := rollbackChanges([]Release{a1}, []Release{a1}); got != nil {
		t.Fatalf("no change: %v", got)
	}
	got := rollbackChanges([]Release{a2, b}, []Release{a1, c})
	var s []string
	for _, c := range got {
		s = append(s, string(c.Action)+" "+c.Name)
	}
	if strings.Join(s, ",") != "rollback a,uninstall b,install c" {
		t.Fatalf("changes = %v", s)
	}
	if u := uninstallChanges([]Release{a1, b}); len(u) != 2 || u[0].Name != "b" || u[1].Action != ReleaseUninstall {
		t.Fatalf("uninstall changes = %+v", u)
	}
}
