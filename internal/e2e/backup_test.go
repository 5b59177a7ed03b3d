package e2e

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/etcdutl/v3/snapshot"
	"go.uber.org/zap"

	"zdt.dev/zdt/internal/kubetest"
	"zdt.dev/zdt/internal/layout"
)

// etcdFlags are the zdt flags that reach the harness's etcd: its URL
// (https), its CA and the test's client certificate.
func etcdFlags(c *kubetest.Cluster) []string {
	return []string{"--etcd-endpoints", c.EtcdURL, "--etcd-cacert", c.EtcdCAFile, "--etcd-cert", c.EtcdCertFile, "--etcd-key", c.EtcdKeyFile}
}

type backupJSON struct {
	Digest, Kind, Path, Source string
	Generation, Objects        int
	Size                       int64
	Recorded                   bool
}

// readBackup reads generation n's backup record and checks the file it
// names against it.
func readBackup(t *testing.T, root string, n int) backupJSON {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, layout.Generation(n)))
	if err != nil {
		t.Fatal(err)
	}
	var g struct{ Backup *backupJSON }
	if err := json.Unmarshal(b, &g); err != nil {
		t.Fatal(err)
	}
	if g.Backup == nil {
		t.Fatalf("generation %d records no backup:\n%s", n, b)
	}
	data, err := os.ReadFile(filepath.Join(root, g.Backup.Path))
	if err != nil {
		t.Fatalf("generation %d's backup: %v", n, err)
	}
	sum := sha256.Sum256(data)
	if g.Backup.Digest != "sha256:"+hex.EncodeToString(sum[:]) || g.Backup.Size != int64(len(data)) || g.Backup.Generation != n {
		t.Fatalf("generation %d's backup record %+v does not match its file (%d bytes, sha256 %x)", n, g.Backup, len(data), sum)
	}
	return *g.Backup
}

func backupFiles(t *testing.T, root string) string {
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
	return strings.Join(out, " ")
}

// restoreAndGet restores an etcd snapshot with etcdutl's restore (which
// checks its sha256), starts the harness's etcd on the restored data and
// returns the value of key.
func restoreAndGet(t *testing.T, snap, key string) []byte {
	t.Helper()
	ports := make([]int, 2)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = l.Addr().(*net.TCPAddr).Port
		l.Close() // free again for etcd
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	data := filepath.Join(t.TempDir(), "restored")
	if err := snapshot.NewV3(zap.NewNop()).Restore(snapshot.RestoreConfig{
		SnapshotPath: snap, Name: "default", OutputDataDir: data, PeerURLs: []string{peer},
		InitialCluster: "default=" + peer, InitialClusterToken: "etcd-cluster",
	}); err != nil {
		t.Fatalf("etcdutl snapshot restore of %s: %v", snap, err)
	}
	cmd := exec.Command(filepath.Join(kubetest.ToolsDir(), "etcd"), "--data-dir", data,
		"--listen-client-urls", client, "--listen-peer-urls", peer)
	logf, err := os.Create(filepath.Join(t.TempDir(), "etcd.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{client}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		resp, err := cli.Get(ctx, key)
		if err == nil {
			if len(resp.Kvs) != 1 {
				t.Fatalf("the restored etcd has no %s", key)
			}
			return resp.Kvs[0].Value
		}
		if ctx.Err() != nil {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("the restored etcd does not answer: %v\n%s", err, b)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestDeployEtcdBackup: before an install changes any release, etcd is
// snapshotted into var/lib/zdt/backups/N-etcd.db with its sha256 and size
// in generation N; the snapshot restores (etcdutl's restore, the
// harness's etcd started on it) and holds an object as it was before the
// upgrade; a re-run takes none; --keep-backups prunes the older ones;
// status lists them; an unreachable etcd stops the install before any
// release changes, leaving no file and no generation.
func TestDeployEtcdBackup(t *testing.T) {
	c := kubetest.Start(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	install := func(bundle string, flags []string) result {
		return zdt(t, dir, append([]string{"install", "--bundle", bundle, "--root", root, "--insecure-skip-signature",
			"--kubeconfig", c.ZdtKubeconfig, "--timeout", "1m", "--keep-backups", "2"}, flags...)...)
	}
	etcd := etcdFlags(c)
	writeDeployInputs(t, dir, "1.0.0", "hello")
	zdt(t, dir, "bundle", "create", "-o", "v1.zdt").must(t, "create v1")
	r := install("v1.zdt", etcd).must(t, "install v1")
	if !strings.Contains(r.stdout, "backup: etcd snapshot "+filepath.Join(root, "var/lib/zdt/backups/1-etcd.db")) {
		t.Fatalf("install v1 said:\n%s", r.stdout)
	}
	if b := readBackup(t, root, 1); b.Kind != "etcd" || !strings.Contains(b.Source, c.EtcdURL) {
		t.Fatalf("generation 1's backup = %+v", b)
	}

	// Nothing changes: no snapshot.
	if r := install("v1.zdt", etcd).must(t, "re-run"); !strings.Contains(r.stdout, "nothing changed") || strings.Contains(r.stdout, "backup:") {
		t.Fatalf("re-run said:\n%s", r.stdout)
	}
	if got := backupFiles(t, root); got != "1-etcd.db" {
		t.Fatalf("backups after the re-run: %s", got)
	}

	// An upgrade: the snapshot taken before it holds the old value.
	writeDeployInputs(t, dir, "1.1.0", "hi")
	zdt(t, dir, "bundle", "create", "-o", "v2.zdt").must(t, "create v2")
	install("v2.zdt", etcd).must(t, "install v2")
	b2 := readBackup(t, root, 2)
	var cm struct{ Data map[string]string }
	getJSON(t, c, "/api/v1/namespaces/app/configmaps/app-config", &cm)
	if cm.Data["greeting"] != "hi" {
		t.Fatalf("app-config after the upgrade = %v", cm.Data)
	}
	val := restoreAndGet(t, filepath.Join(root, b2.Path), "/registry/configmaps/app/app-config")
	if !strings.Contains(string(val), "hello") || strings.Contains(string(val), "\x02hi") {
		t.Fatalf("the restored snapshot's app-config is not the one before the upgrade: %q", val)
	}

	// A third generation: keep 2 drops the first snapshot.
	writeDeployInputs(t, dir, "1.2.0", "hey")
	zdt(t, dir, "bundle", "create", "-o", "v3.zdt").must(t, "create v3")
	install("v3.zdt", etcd).must(t, "install v3")
	readBackup(t, root, 3)
	if got := backupFiles(t, root); got != "2-etcd.db 3-etcd.db" {
		t.Fatalf("backups with --keep-backups 2: %s", got)
	}
	st := zdt(t, dir, "status", "--root", root).must(t, "status")
	if !strings.Contains(st.stdout, "backup     generation 3  etcd    "+filepath.Join(root, "var/lib/zdt/backups/3-etcd.db")) ||
		!strings.Contains(st.stdout, "backup     generation 2  etcd") || strings.Contains(st.stdout, "generation 1  etcd") {
		t.Fatalf("status does not list the backups:\n%s", st.stdout)
	}
	var sj struct{ Backups []backupJSON }
	if err := json.Unmarshal([]byte(zdt(t, dir, "status", "--root", root, "--output", "json").must(t, "status json").stdout), &sj); err != nil {
		t.Fatal(err)
	}
	if len(sj.Backups) != 2 || sj.Backups[0] != readBackup(t, root, 3) || !sj.Backups[1].Recorded || sj.Backups[1].Digest != b2.Digest {
		t.Fatalf("status --output json backups = %+v", sj.Backups)
	}

	// An etcd that does not answer stops the install before any release
	// changes.
	writeDeployInputs(t, dir, "1.3.0", "ho")
	zdt(t, dir, "bundle", "create", "-o", "v4.zdt").must(t, "create v4")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()
	start := time.Now()
	r = install("v4.zdt", []string{"--etcd-endpoints", dead})
	t.Logf("failed snapshot took %s", time.Since(start).Round(time.Millisecond))
	if r.code == 0 || !strings.Contains(r.stderr, "etcd snapshot failed") || !strings.Contains(r.stderr, dead) {
		t.Fatalf("install with an unreachable etcd: exit %d\n%s", r.code, r.stderr)
	}
	if got := revisions(t, c, "app", "app"); len(got) != 3 {
		t.Fatalf("a failed snapshot changed release app/app: %v", got)
	}
	if _, err := os.Stat(filepath.Join(root, layout.Generation(4))); err == nil {
		t.Fatal("a failed snapshot recorded generation 4")
	}
	if got := backupFiles(t, root); got != "2-etcd.db 3-etcd.db" {
		t.Fatalf("backups after a failed snapshot: %s", got)
	}
}

// TestDeployObjectsBackup: without etcd endpoints, an install that
// changes releases exports the objects of the releases it upgrades, as
// they are in the cluster, into var/lib/zdt/backups/N-objects.yaml
// (recorded like a snapshot), and says that it is no etcd snapshot.
func TestDeployObjectsBackup(t *testing.T) {
	c := kubetest.Start(t)
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	install := func(bundle string) result {
		return zdt(t, dir, "install", "--bundle", bundle, "--root", root, "--insecure-skip-signature",
			"--kubeconfig", c.ZdtKubeconfig, "--timeout", "1m").must(t, "install "+bundle)
	}
	writeDeployInputs(t, dir, "1.0.0", "hello")
	zdt(t, dir, "bundle", "create", "-o", "v1.zdt").must(t, "create v1")
	if r := install("v1.zdt"); !strings.Contains(r.stdout, "exported 0 objects") {
		t.Fatalf("the first install (no release existed) said:\n%s", r.stdout)
	}

	writeDeployInputs(t, dir, "1.1.0", "hi")
	zdt(t, dir, "bundle", "create", "-o", "v2.zdt").must(t, "create v2")
	r := install("v2.zdt")
	if !strings.Contains(r.stdout, "backup: no etcd snapshot (no --etcd-endpoints): exported 2 objects to "+filepath.Join(root, "var/lib/zdt/backups/2-objects.yaml")) {
		t.Fatalf("install v2 said:\n%s", r.stdout)
	}
	b := readBackup(t, root, 2)
	if b.Kind != "objects" || b.Objects != 2 || !strings.Contains(b.Source, "app/app revision 1") {
		t.Fatalf("generation 2's backup = %+v", b)
	}
	data, err := os.ReadFile(filepath.Join(root, b.Path))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: ConfigMap", "name: app-config", "greeting: hello", "kind: Widget", "name: w1", "size: 3", "uid: "} {
		if !strings.Contains(string(data), want) {
			t.Fatalf("the export lacks %q:\n%s", want, data)
		}
	}
	if strings.Contains(string(data), "managedFields") || strings.Contains(string(data), "extra") {
		t.Fatalf("the export holds managed fields or objects of unchanged releases:\n%s", data)
	}
}
