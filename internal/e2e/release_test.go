package e2e

import (
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestStaticBinary checks that zdt, built as `make release` builds it,
// needs no dynamic loader and no shared library, so it starts on hosts
// with an old glibc (or none): it runs in a root that holds nothing but
// the binary.
func TestStaticBinary(t *testing.T) {
	f, err := elf.Open(zdtBin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Fatalf("zdt has a %v program header: it is dynamically linked", p.Type)
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		t.Fatalf("zdt needs shared libraries %v", libs)
	}
	if os.Geteuid() != 0 {
		t.Log("not root: skipping the run in an empty root")
		return
	}
	chroot, err := exec.LookPath("chroot")
	if err != nil {
		t.Log("no chroot: skipping the run in an empty root")
		return
	}
	empty := t.TempDir()
	data, err := os.ReadFile(zdtBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(empty, "zdt"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	r := runIn(t, empty, nil, chroot, empty, "/zdt", "version")
	if r.code != 0 || !strings.Contains(r.stdout, "zdt") {
		t.Fatalf("zdt version in an empty root: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// TestSignBlob signs a file with `zdt key sign-blob` (what `make release`
// does to SHA256SUMS) and lets the stock cosign verify it offline.
func TestSignBlob(t *testing.T) {
	dir := t.TempDir()
	env := []string{"COSIGN_PASSWORD=test"}
	runIn(t, dir, env, zdtBin, "key", "generate", "--prefix", "k").must(t, "key generate")
	sums := filepath.Join(dir, "SHA256SUMS")
	if err := os.WriteFile(sums, []byte("0000  zdt-linux-amd64\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runIn(t, dir, env, zdtBin, "key", "sign-blob", "--key", "k.key", "SHA256SUMS").must(t, "sign-blob")
	if r := zdt(t, dir, "key", "sign-blob", "SHA256SUMS"); r.code != 2 {
		t.Fatalf("sign-blob without --key: exit %d, want 2", r.code)
	}
	cosign := client(t, "cosign")
	verify := func() result {
		return runIn(t, dir, nil, cosign, "verify-blob", "--key", "k.pub", "--insecure-ignore-tlog=true",
			"--trusted-root", "trusted-root.json", "--new-bundle-format", "--bundle", "SHA256SUMS.sigstore.json", "SHA256SUMS")
	}
	verify().must(t, "cosign verify-blob")
	if err := os.WriteFile(sums, []byte("1111  zdt-linux-amd64\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := verify(); r.code == 0 {
		t.Fatal("cosign verified a changed SHA256SUMS")
	}
}
