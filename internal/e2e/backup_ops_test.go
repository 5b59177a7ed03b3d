package e2e

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"zdt.dev/zdt/internal/kubetest"
	"zdt.dev/zdt/internal/layout"
)

// TestRollbackUninstallBackup: `zdt rollback` and `zdt uninstall` back the
// cluster up before they change any release, as install does: an etcd
// snapshot with --etcd-endpoints (it restores, and holds the value from
// before the rollback), an export of the releases' objects without;
// recorded in the generation they write, pruned by --keep-backups, listed
// by status after the last uninstall. An etcd that does not answer stops
// either before any release changes.
func TestRollbackUninstallBackup(t *testing.T) {
	c := kubetest.Start(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	kc := []string{"--root", root, "--kubeconfig", c.ZdtKubeconfig, "--timeout", "1m", "--keep-backups", "2"}
	etcd := etcdFlags(c)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()

	for _, v := range [][2]string{{"1.0.0", "hello"}, {"1.1.0", "hi"}} {
		writeDeployInputs(t, dir, v[0], v[1])
		zdt(t, dir, "bundle", "create", "-o", "v"+v[0]+".zdt").must(t, "create "+v[0])
		zdt(t, dir, append([]string{"install", "--bundle", "v" + v[0] + ".zdt", "--insecure-skip-signature"}, append(kc, etcd...)...)...).must(t, "install "+v[0])
	}
	if got := backupFiles(t, root); got != "1-etcd.db 2-etcd.db" {
		t.Fatalf("backups after two installs: %s", got)
	}

	// An etcd that does not answer: the rollback stops before anything.
	r := zdt(t, dir, append([]string{"rollback", "--etcd-endpoints", dead}, kc...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "etcd snapshot failed") || !strings.Contains(r.stderr, dead) {
		t.Fatalf("rollback with an unreachable etcd: exit %d\n%s", r.code, r.stderr)
	}
	if got := revisions(t, c, "app", "app"); len(got) != 2 {
		t.Fatalf("a failed snapshot changed release app/app: %v", got)
	}
	if _, err := os.Stat(filepath.Join(root, layout.Generation(3))); err == nil {
		t.Fatal("a failed snapshot recorded generation 3")
	}

	// The rollback: snapshot 3 holds v2's value, then app goes back.
	r = zdt(t, dir, append([]string{"rollback"}, append(kc, etcd...)...)...).must(t, "rollback")
	if !strings.Contains(r.stdout, "backup: etcd snapshot "+filepath.Join(root, "var/lib/zdt/backups/3-etcd.db")) || !strings.Contains(r.stdout, "rolled back: generation 3") {
		t.Fatalf("rollback said:\n%s", r.stdout)
	}
	b3 := readBackup(t, root, 3)
	if b3.Kind != "etcd" || !strings.Contains(b3.Source, c.EtcdURL) {
		t.Fatalf("generation 3's backup = %+v", b3)
	}
	var cm struct{ Data map[string]string }
	getJSON(t, c, "/api/v1/namespaces/app/configmaps/app-config", &cm)
	if cm.Data["greeting"] != "hello" {
		t.Fatalf("app-config after the rollback = %v", cm.Data)
	}
	if val := restoreAndGet(t, filepath.Join(root, b3.Path), "/registry/configmaps/app/app-config"); !strings.Contains(string(val), "\x02hi") || strings.Contains(string(val), "hello") {
		t.Fatalf("the snapshot taken before the rollback holds app-config %q, want v2's", val)
	}
	if got := backupFiles(t, root); got != "2-etcd.db 3-etcd.db" {
		t.Fatalf("backups after the rollback with --keep-backups 2: %s", got)
	}

	// Uninstall: an unreachable etcd stops it; without etcd the objects
	// of the releases are exported first.
	r = zdt(t, dir, append([]string{"uninstall", "--etcd-endpoints", dead}, kc...)...)
	if r.code == 0 || !strings.Contains(r.stderr, "etcd snapshot failed") {
		t.Fatalf("uninstall with an unreachable etcd: exit %d\n%s", r.code, r.stderr)
	}
	if got := revisions(t, c, "app", "app"); len(got) != 3 {
		t.Fatalf("a failed snapshot changed release app/app: %v", got)
	}
	r = zdt(t, dir, append([]string{"uninstall"}, kc...)...).must(t, "uninstall")
	if !strings.Contains(r.stdout, "backup: no etcd snapshot (no --etcd-endpoints): exported ") || !strings.Contains(r.stdout, filepath.Join(root, "var/lib/zdt/backups/4-objects.yaml")) {
		t.Fatalf("uninstall said:\n%s", r.stdout)
	}
	if got := revisions(t, c, "app", "app"); len(got) != 0 {
		t.Fatalf("app/app after uninstall: %v", got)
	}
	b4 := readBackup(t, root, 4)
	if b4.Kind != "objects" || !strings.Contains(b4.Source, "app/app revision 3") {
		t.Fatalf("generation 4's backup = %+v", b4)
	}
	data, err := os.ReadFile(filepath.Join(root, b4.Path))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"name: app-config", "greeting: hello", "kind: Widget"} {
		if !strings.Contains(string(data), want) {
			t.Fatalf("the export lacks %q:\n%s", want, data)
		}
	}
	if got := backupFiles(t, root); got != "3-etcd.db 4-objects.yaml" {
		t.Fatalf("backups after the uninstall: %s", got)
	}
	st := zdt(t, dir, "status", "--root", root).must(t, "status")
	if !strings.Contains(st.stdout, "nothing installed") || !strings.Contains(st.stdout, "backup     generation 4  objects "+filepath.Join(root, b4.Path)) ||
		!strings.Contains(st.stdout, "backup     generation 3  etcd    "+filepath.Join(root, b3.Path)) {
		t.Fatalf("status after uninstall:\n%s", st.stdout)
	}
	var sj struct{ Backups []backupJSON }
	if err := json.Unmarshal([]byte(zdt(t, dir, "status", "--root", root, "--output", "json").must(t, "status json").stdout), &sj); err != nil {
		t.Fatal(err)
	}
	if len(sj.Backups) != 2 || sj.Backups[0] != b4 || sj.Backups[1] != b3 {
		t.Fatalf("status --output json backups = %+v, want %+v and %+v", sj.Backups, b4, b3)
	}
}
