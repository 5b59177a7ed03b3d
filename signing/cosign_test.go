package signing

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/oci"
	"oras.land/oras-go/v2/registry/remote"

	"zdt.dev/zdt/bundle"
)

// cosignBin finds the stock cosign CLI. Missing, the test is skipped,
// unless ZDT_REQUIRE_CLIENTS=1 (CI, which installs it with `make tools`).
func cosignBin(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("cosign")
	if err != nil {
		if home, herr := os.UserHomeDir(); herr == nil {
			if _, serr := os.Stat(filepath.Join(home, "go", "bin", "cosign")); serr == nil {
				return filepath.Join(home, "go", "bin", "cosign")
			}
		}
		if os.Getenv("ZDT_REQUIRE_CLIENTS") == "1" {
			t.Fatalf("cosign not found and ZDT_REQUIRE_CLIENTS=1 (install it with .ci/install-tools cosign)")
		}
		t.Skip("cosign not installed (go install github.com/sigstore/cosign/v2/cmd/cosign@v2.6.5)")
	}
	return p
}

// runCosign runs cosign offline: a private HOME (no ~/.sigstore cache, no
// docker credentials), and fails the test if ok is not what happened.
func runCosign(t *testing.T, bin string, ok bool, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HOME="+home, "TUF_ROOT="+filepath.Join(home, "tuf"), "DOCKER_CONFIG="+home,
		"SIGSTORE_NO_CACHE=1", "HTTPS_PROXY=http://127.0.0.1:1", "HTTP_PROXY=http://127.0.0.1:1", "NO_PROXY=127.0.0.1")
	out, err := cmd.CombinedOutput()
	if ok && err != nil {
		t.Fatalf("cosign %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	if !ok && err == nil {
		t.Fatalf("cosign %s succeeded, want a refusal\n%s", strings.Join(args, " "), out)
	}
	return string(out)
}

// TestStockCosignVerifiesBundle checks a signed bundle with the stock
// cosign CLI, offline, three ways: the archive file (verify-blob with the
// sigstore bundle), the root pushed to a registry (verify and
// verify-attestation), and the extracted layout (verify --local-image).
func TestStockCosignVerifiesBundle(t *testing.T) {
	bin := cosignBin(t)
	ctx := context.Background()
	dir := t.TempDir()
	kp := testKey(t, dir, "cosign", "pw")
	other := testKey(t, filepath.Join(dir, "other"), "cosign", "")
	out, res := testBundle(t, dir, "signed", kp.PrivateKey, "pw", []byte("tool\n"))
	offline := []string{"--insecure-ignore-tlog=true", "--trusted-root", kp.TrustedRoot}

	t.Run("verify-blob archive", func(t *testing.T) {
		args := append([]string{"verify-blob", "--key", kp.PublicKey, "--bundle", ArchiveBundlePath(out), "--new-bundle-format"}, offline...)
		got := runCosign(t, bin, true, append(args, out)...)
		if !strings.Contains(got, "Verified OK") {
			t.Errorf("cosign verify-blob said:\n%s", got)
		}
		// Another key, and a changed archive, are refused.
		args[2] = other.PublicKey
		runCosign(t, bin, false, append(args, out)...)
		args[2] = kp.PublicKey
		tampered := filepath.Join(dir, "tampered.zdt")
		b, _ := os.ReadFile(out)
		b[len(b)-2048] ^= 0xff
		writeFile(t, tampered, b)
		runCosign(t, bin, false, append(args, tampered)...)
	})

	t.Run("verify registry", func(t *testing.T) {
		srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
		t.Cleanup(srv.Close)
		host := strings.TrimPrefix(srv.URL, "http://")
		repoName := host + "/" + RootRepository("signed")
		src, err := oci.NewFromTar(ctx, out)
		if err != nil {
			t.Fatal(err)
		}
		dst, err := remote.NewRepository(repoName)
		if err != nil {
			t.Fatal(err)
		}
		dst.PlainHTTP = true
		tag := strings.ReplaceAll(res.Root.Digest.String(), ":", "-")
		for from, to := range map[string]string{bundle.RootRef("signed", "1.0.0"): "1.0.0", tag + ".sig": tag + ".sig", tag + ".att": tag + ".att"} {
			if _, err := oras.Copy(ctx, src, from, dst, to, oras.DefaultCopyOptions); err != nil {
				t.Fatalf("copying %s: %v", from, err)
			}
		}
		ref := repoName + "@" + res.Root.Digest.String()
		got := runCosign(t, bin, true, append([]string{"verify", "--key", kp.PublicKey, "--allow-http-registry"}, append(offline, ref)...)...)
		if !strings.Contains(got, res.Root.Digest.String()) {
			t.Errorf("cosign verify output does not name the root:\n%s", got)
		}
		for _, typ := range []string{"slsaprovenance1", "cyclonedx"} {
			got := runCosign(t, bin, true, append([]string{"verify-attestation", "--key", kp.PublicKey, "--type", typ, "--allow-http-registry"}, append(offline, ref)...)...)
			if !strings.Contains(got, "payloadType") {
				t.Errorf("cosign verify-attestation --type %s output:\n%s", typ, got)
			}
		}
		// The version tag resolves to the signed root too; another key is refused.
		runCosign(t, bin, true, append([]string{"verify", "--key", kp.PublicKey, "--allow-http-registry"}, append(offline, repoName+":1.0.0")...)...)
		runCosign(t, bin, false, append([]string{"verify", "--key", other.PublicKey, "--allow-http-registry"}, append(offline, ref)...)...)
	})

	t.Run("verify extracted layout", func(t *testing.T) {
		a, err := bundle.Open(ctx, out)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		layout := filepath.Join(dir, "layout")
		if err := bundle.Extract(ctx, a, layout, bundle.ExtractOptions{}); err != nil {
			t.Fatal(err)
		}
		got := runCosign(t, bin, true, append([]string{"verify", "--key", kp.PublicKey, "--local-image"}, append(offline, layout)...)...)
		if !strings.Contains(got, res.Root.Digest.String()) {
			t.Errorf("cosign verify --local-image output does not name the root:\n%s", got)
		}
		runCosign(t, bin, true, append([]string{"verify-attestation", "--key", kp.PublicKey, "--type", "slsaprovenance1", "--local-image"}, append(offline, layout)...)...)
		runCosign(t, bin, false, append([]string{"verify", "--key", other.PublicKey, "--local-image"}, append(offline, layout)...)...)
	})
}
