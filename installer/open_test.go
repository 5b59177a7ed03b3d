package installer

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/signing"
)

// TestOpenVerified (issue 12.5): the one way install, serve and push open a
// bundle: the signature first (an unsigned bundle refused at index.json),
// then a delta's base from the given files, else from what the store has
// installed, else refused naming the base.
func TestOpenVerified(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	v1 := release{version: "1.0.0", images: map[string]int64{"registry.test/app/a:1": 1}, files: map[string][]byte{"/opt/tool": []byte("v1")}}.build(t, filepath.Join(dir, "v1"))
	v2 := release{version: "2.0.0", images: map[string]int64{"registry.test/app/a:1": 2}, files: map[string][]byte{"/opt/tool": []byte("v2")}, base: v1}.build(t, filepath.Join(dir, "v2"))
	insecure := &signing.Policy{InsecureSkipSignature: true}

	if _, err := OpenVerified(ctx, v1, &signing.Policy{}, nil); !errors.Is(err, signing.ErrUnsigned) || !errors.Is(err, bundle.ErrVerification) {
		t.Fatalf("unsigned bundle, empty policy: %v, want signing.ErrUnsigned", err)
	}
	v, err := OpenVerified(ctx, v1, insecure, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Signature.Warnings) == 0 {
		t.Errorf("no warning for an unchecked signature: %+v", v.Signature)
	}
	v.Close()

	// A delta: left alone without bases, refused with empty ones, attached
	// from a file or from the store where its base is installed.
	d, err := OpenVerified(ctx, v2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Base() == "" || d.BaseAttached() {
		t.Fatalf("delta %s: base %q attached %v", v2, d.Base(), d.BaseAttached())
	}
	d.Close()
	empty := openStore(t, t.TempDir(), false)
	for name, b := range map[string]*Bases{"no files": {}, "store without the base": {Store: empty}} {
		if _, err := OpenVerified(ctx, v2, insecure, b); !errors.Is(err, bundle.ErrNeedsBase) {
			t.Errorf("%s: %v, want bundle.ErrNeedsBase", name, err)
		}
	}
	fromFile, err := OpenVerified(ctx, v2, insecure, &Bases{Files: []string{v2, v1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fromFile.Verify(ctx, bundle.VerifyOptions{}); err != nil || !fromFile.BaseAttached() {
		t.Fatalf("delta with its base file: attached %v, verify %v", fromFile.BaseAttached(), err)
	}
	if err := fromFile.Close(); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	installStore(t, v1, root, false)
	st := openStore(t, root, false)
	fromStore, err := OpenVerified(ctx, v2, insecure, &Bases{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	defer fromStore.Close()
	if _, err := fromStore.Verify(ctx, bundle.VerifyOptions{}); err != nil || !fromStore.BaseAttached() {
		t.Fatalf("delta over the installed base: attached %v, verify %v", fromStore.BaseAttached(), err)
	}
}
