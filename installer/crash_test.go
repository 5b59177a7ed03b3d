package installer

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/registry"
)

// TestCrashHelper is the install process TestCrashDuringUpgrade kills.
func TestCrashHelper(t *testing.T) {
	if os.Getenv("ZDT_CRASH_HELPER") != "1" {
		t.Skip("run by TestCrashDuringUpgrade")
	}
	fmt.Println("ready") // the parent starts its kill timer here
	if _, err := installArchive(os.Getenv("ZDT_ARCHIVE"), os.Getenv("ZDT_ROOT")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// TestCrashDuringUpgrade kills an upgrade with SIGKILL at random points and
// checks that every installed file is always either its complete v1 or its
// complete v2 version, and that a re-run always ends at v2.
//
// It runs twice: with the archive kept in the registry store by a hard
// link (the default) and with its blobs copied into the store.
func TestCrashDuringUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("slow")
	}
	for _, mode := range []struct{ name, copy string }{{"kept", "0"}, {"copied", "1"}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Setenv("ZDT_COPY_BLOBS", mode.copy)
			crashDuringUpgrade(t, false)
		})
	}
	// With another bundle installed beside it (bundles keyed by name):
	// it is never touched, whatever the kill point.
	t.Run("beside another bundle", func(t *testing.T) {
		t.Setenv("ZDT_COPY_BLOBS", "0")
		crashDuringUpgrade(t, true)
	})
}

func crashDuringUpgrade(t *testing.T, beside bool) {
	dir := t.TempDir()
	big1 := bytes.Repeat([]byte("v1 big file "), 400_000) // ~4.8 MB each, written with fsync
	big2 := bytes.Repeat([]byte("v2 big file "), 400_000)
	rv1 := release{version: "1.0.0", images: map[string]int64{"registry.test/app/a:1": 1},
		files: map[string][]byte{"/opt/big1": big1, "/opt/big2": big1, "/opt/gone": []byte("gone in v2"), "/opt/same": []byte("same")}}
	rv2 := release{version: "2.0.0", images: map[string]int64{"registry.test/app/a:1": 5},
		files: map[string][]byte{"/opt/big1": big2, "/opt/big2": big2, "/opt/new": []byte("new in v2"), "/opt/same": []byte("same")}}
	a1 := rv1.build(t, filepath.Join(dir, "v1"))
	a2 := rv2.build(t, filepath.Join(dir, "v2"))
	other := ""
	if beside {
		other = release{name: "other", version: "1.0.0", images: map[string]int64{"registry.test/other/o:1": 9},
			files: map[string][]byte{"/opt/other": []byte("the other bundle")}}.build(t, filepath.Join(dir, "other"))
	}
	setup := func(root string) {
		install(t, a1, root)
		if other != "" {
			install(t, other, root)
		}
	}

	// start runs the upgrade in a subprocess and returns once it is about
	// to call Install.
	start := func(root string) *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashHelper$")
		cmd.Env = append(os.Environ(), "ZDT_CRASH_HELPER=1", "ZDT_ARCHIVE="+a2, "ZDT_ROOT="+root)
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "ready\n" {
			t.Fatalf("helper said %q, %v", line, err)
		}
		return cmd
	}
	// How long the upgrade itself takes: kill points spread over it.
	root := t.TempDir()
	setup(root)
	began := time.Now()
	if err := start(root).Wait(); err != nil {
		t.Fatalf("upgrade subprocess: %v", err)
	}
	window := time.Since(began)
	t.Logf("the upgrade takes %v in a subprocess", window)

	allowed := map[string][]string{ // file → acceptable contents ("" = absent)
		"opt/big1": {string(big1), string(big2)},
		"opt/big2": {string(big1), string(big2)},
		"opt/gone": {"gone in v2", ""},
		"opt/new":  {"", "new in v2"},
		"opt/same": {"same"},
	}
	if beside {
		allowed["opt/other"] = []string{"the other bundle"}
	}
	rng := rand.New(rand.NewSource(time.Now().UnixNano()))
	// Keep killing until 30 kills landed inside the upgrade (runs that
	// finished before the kill are checked too).
	want, maxRuns := 30, 150
	if beside {
		want, maxRuns = 12, 60
	}
	killed, i := 0, 0
	for ; killed < want && i < maxRuns; i++ {
		root := t.TempDir()
		setup(root)
		cmd := start(root)
		time.Sleep(time.Duration(rng.Int63n(int64(window) * 8 / 10)))
		cmd.Process.Signal(syscall.SIGKILL)
		if err := cmd.Wait(); err != nil {
			killed++
		}
		for f, ok := range allowed {
			b, err := os.ReadFile(filepath.Join(root, f))
			got := string(b)
			if err != nil {
				got = ""
			}
			if !contains(ok, got) {
				t.Fatalf("kill point %d: %s is neither complete v1 nor complete v2 (%d bytes)", i, f, len(got))
			}
		}
		res := install(t, a2, root)
		if res.Generation < 2 {
			t.Fatalf("kill point %d: re-run ended at generation %d", i, res.Generation)
		}
		readIs(t, root, "opt/big1", string(big2))
		readIs(t, root, "opt/big2", string(big2))
		readIs(t, root, "opt/new", "new in v2")
		if _, err := os.Stat(filepath.Join(root, "opt/gone")); !os.IsNotExist(err) {
			t.Fatalf("kill point %d: opt/gone survived the re-run", i)
		}
		if beside {
			readIs(t, root, "opt/other", "the other bundle")
			st, err := GetStatusOf(t.Context(), root, "plat")
			if err != nil || st.Generation.Version != "2.0.0" || !st.Healthy() {
				t.Fatalf("kill point %d: status %+v, %v", i, st, err)
			}
			if st, err = GetStatus(t.Context(), root); err != nil || len(st.Bundles) != 2 || !st.Healthy() {
				t.Fatalf("kill point %d: status of both %+v, %v", i, st, err)
			}
		} else if st, err := GetStatus(t.Context(), root); err != nil || st.Generation.Version != "2.0.0" || len(st.Drift) != 0 {
			t.Fatalf("kill point %d: status %+v, %v", i, st, err)
		}
		if again := install(t, a2, root); again.Applied {
			t.Fatalf("kill point %d: a third run still changed things: %+v", i, again.Plan.Changes)
		}
		if left := tempFiles(t, root); len(left) > 0 {
			t.Fatalf("kill point %d: temp files left after the re-run: %v", i, left)
		}
		if bad := badStoreBlobs(t, root); len(bad) > 0 {
			t.Fatalf("kill point %d: registry blobs that do not hash to their name: %v", i, bad)
		}
	}
	t.Logf("%d of %d runs were killed before finishing", killed, i)
	if killed < want {
		t.Fatalf("only %d of %d kills landed inside the upgrade, want %d", killed, i, want)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func tempFiles(t *testing.T, root string) []string {
	var out []string
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && strings.HasPrefix(fi.Name(), fsutil.TempPrefix) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

// badStoreBlobs hashes every blob of the registry store under root and
// verifies every kept archive.
func badStoreBlobs(t *testing.T, root string) []string {
	t.Helper()
	var bad []string
	n := 0
	kept, _ := filepath.Glob(filepath.Join(registry.StoreDir(root), "archives", "*.zdt"))
	for _, p := range kept {
		n++
		a, err := bundle.Open(t.Context(), p)
		if err != nil {
			bad = append(bad, p+": "+err.Error())
			continue
		}
		if _, err := a.Verify(t.Context(), bundle.VerifyOptions{}); err != nil || a.Root.Digest.Encoded()+".zdt" != filepath.Base(p) {
			bad = append(bad, fmt.Sprintf("%s: root %s: %v", p, a.Root.Digest, err))
		}
		a.Close()
	}
	dir := filepath.Join(registry.StoreDir(root), "docker/registry/v2/blobs")
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil || !fi.Mode().IsRegular() || fi.Name() != "data" {
			return err
		}
		n++
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != filepath.Base(filepath.Dir(p)) {
			bad = append(bad, p)
		}
		return nil
	})
	if n == 0 {
		t.Fatal("no registry blobs or kept archives under the root: the install did not import")
	}
	return bad
}
