package signing

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/manifests"
)

// TestRetaggedSignedBundle (issue 11.2): a signed bundle whose index.json
// was retagged (the file item tagged docker.io/library/nginx:latest, the
// image given the file's tag, the root renamed) does not pass verify --key:
// the tags are checked against the signed root.
func TestRetaggedSignedBundle(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kp := testKey(t, dir, "cosign", "")
	signed, _ := testBundle(t, dir, "a", kp.PrivateKey, "", []byte("tool a\n"))
	policy, err := LoadPolicy(ctx, PolicyOptions{Keys: []string{kp.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkBundle(ctx, signed, policy); err != nil {
		t.Fatalf("untouched bundle: %v", err)
	}
	for _, tc := range []struct {
		name string
		edit func(*ocispec.Index)
	}{
		{"file tagged nginx", func(idx *ocispec.Index) {
			for i := range idx.Manifests {
				if idx.Manifests[i].Annotations[manifests.AnnotationKind] == manifests.KindFile {
					idx.Manifests[i].Annotations[manifests.AnnotationRefName] = "docker.io/library/nginx:latest"
				}
			}
		}},
		{"root renamed", func(idx *ocispec.Index) {
			idx.Manifests[0].Annotations[manifests.AnnotationRefName] = "zdt/b:1.0.0"
		}},
		{"signature retagged as an image", func(idx *ocispec.Index) {
			for i := range idx.Manifests {
				if r := idx.Manifests[i].Annotations[manifests.AnnotationRefName]; strings.HasSuffix(r, ".att") {
					idx.Manifests[i].Annotations = map[string]string{manifests.AnnotationSubject: idx.Manifests[0].Digest.String(), manifests.AnnotationRefName: "registry.test/app/web:1.0"}
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "retagged.zdt")
			writeEntries(t, p, rewriteIndex(t, readEntries(t, signed), tc.edit))
			_, err := checkBundle(ctx, p, policy)
			if !errors.Is(err, bundle.ErrIndexMismatch) || !errors.Is(err, bundle.ErrVerification) {
				t.Fatalf("err = %v, want bundle.ErrIndexMismatch (exit code 3)", err)
			}
		})
	}
}

// TestIndexCheckRefusesUnsignedEarly (issue 11.9): IndexCheck refuses an
// unsigned bundle at index.json, with the error Verify gives, and lets a
// signed one (or any with --insecure-skip-signature) through.
func TestIndexCheckRefusesUnsignedEarly(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	kp := testKey(t, dir, "cosign", "")
	signed, _ := testBundle(t, dir, "a", kp.PrivateKey, "", []byte("tool a\n"))
	unsigned, _ := testBundle(t, dir, "d", "", "", []byte("tool d\n"))
	policy, err := LoadPolicy(ctx, PolicyOptions{Keys: []string{kp.PublicKey}})
	if err != nil {
		t.Fatal(err)
	}
	insecure, err := LoadPolicy(ctx, PolicyOptions{InsecureSkipSignature: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		path string
		p    Policy
		want error
	}{
		{"signed", signed, policy, nil},
		{"unsigned", unsigned, policy, ErrUnsigned},
		{"unsigned, insecure", unsigned, insecure, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, err := bundle.OpenWith(ctx, tc.path, bundle.OpenOptions{CheckIndex: IndexCheck(tc.p)})
			if err == nil {
				a.Close()
			}
			if tc.want == nil && err != nil || tc.want != nil && (!errors.Is(err, tc.want) || !errors.Is(err, bundle.ErrVerification)) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}
