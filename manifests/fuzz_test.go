package manifests

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

// yamlLineBreak is what yaml.v3 counts as a line break.
var yamlLineBreak = regexp.MustCompile("\r\n|[\r\n\u0085\u2028\u2029]")

// checkErrorContract: a parse failure is an ErrInvalid list of positioned
// FieldErrors, sorted, and every position is inside the input.
func checkErrorContract(t *testing.T, err error, data []byte) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) {
		// Only Load's I/O errors may be anything else; Parse reads no files.
		t.Fatalf("error does not match ErrInvalid: %v", err)
	}
	var list ErrorList
	if !errors.As(err, &list) || len(list) == 0 {
		t.Fatalf("error is not a non-empty ErrorList: %T %v", err, err)
	}
	lines := len(yamlLineBreak.FindAllIndex(data, -1)) + 1
	for i, e := range list {
		if e.Pos.Line < 0 || e.Pos.Line > lines || e.Pos.Column < 0 {
			t.Errorf("error %q points outside the input (%d lines)", e, lines)
		}
		if i > 0 {
			a := list[i-1].Pos
			if a.Line > e.Pos.Line || (a.Line == e.Pos.Line && a.Column > e.Pos.Column) {
				t.Errorf("errors not sorted: %v before %v", a, e.Pos)
			}
		}
	}
}

func addSeedFiles(f *testing.F, patterns ...string) {
	for _, p := range patterns {
		paths, err := filepath.Glob(p)
		if err != nil {
			f.Fatal(err)
		}
		for _, path := range paths {
			data, err := os.ReadFile(path)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
}

// FuzzParse: the spec parser never panics, fails only with the documented
// error type, and what it accepts is stable (parsing Raw again gives the
// same spec) and usable (the helpers the builder calls accept every value).
func FuzzParse(f *testing.F) {
	f.Add([]byte(fullSpec))
	f.Add([]byte(actionsSpec))
	addSeedFiles(f, exampleSpec, filepath.Join("testdata", "errors", "*.yaml"))
	f.Add([]byte("apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: x, version: v}\ncomponents: [{name: c, images: [a]}]\n"))
	f.Add([]byte("apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: x, version: v}\ncomponents: [{name: c, charts: [{name: a, source: a, exclude: [busybox], images: {nginx: 'm.example/nginx:1'}}]}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := Parse("fuzz.yaml", data)
		if err != nil {
			checkErrorContract(t, err, data)
			return
		}
		again, err := Parse("fuzz.yaml", s.Raw)
		if err != nil {
			t.Fatalf("Parse(Raw) failed after Parse succeeded: %v", err)
		}
		if again.ItemCount() != s.ItemCount() || !reflect.DeepEqual(again, s) {
			t.Fatalf("Parse(Raw) differs:\n%+v\n%+v", s, again)
		}
		if s.ItemCount() == 0 {
			t.Fatalf("a spec with no items was accepted")
		}
		for _, p := range s.Platforms {
			if _, _, _, err := ParsePlatform(p); err != nil {
				t.Fatalf("accepted platform fails ParsePlatform: %v", err)
			}
		}
		for _, c := range s.Components {
			for _, im := range c.Images {
				if im.Source != "" {
					if _, _, _, err := SplitImageSource(im.Source); err != nil {
						t.Fatalf("accepted image source fails SplitImageSource: %v", err)
					}
				}
			}
			for _, ch := range c.Charts {
				for _, ref := range ch.Exclude {
					if _, err := NormalizeImageRef(ref); err != nil {
						t.Fatalf("accepted exclude %q fails NormalizeImageRef: %v", ref, err)
					}
				}
				for from, to := range ch.Images {
					if _, err := NormalizeImageRef(from); err != nil {
						t.Fatalf("accepted images key %q fails NormalizeImageRef: %v", from, err)
					}
					if _, err := NormalizeImageRef(to); err != nil {
						t.Fatalf("accepted images value %q fails NormalizeImageRef: %v", to, err)
					}
				}
			}
			for _, a := range append(append([]Action(nil), c.Actions.Before...), c.Actions.After...) {
				if d, err := a.TimeoutDuration(); err != nil || d <= 0 || d > MaxActionTimeout {
					t.Fatalf("accepted action %+v has timeout %v, %v", a, d, err)
				}
				if a.Command == "" || a.DisplayName() == "" || a.DisplayName() == "." || a.DisplayName() == "/" {
					t.Fatalf("accepted action %+v has no command or name", a)
				}
				for k := range a.Env {
					if strings.HasPrefix(strings.ToUpper(k), ReservedEnvPrefix) || strings.ContainsAny(k, "=\x00") {
						t.Fatalf("accepted action %+v sets env %q", a, k)
					}
				}
			}
			for _, fl := range c.Files {
				if _, err := ParseMode(fl.Mode); err != nil {
					t.Fatalf("accepted file mode fails ParseMode: %v", err)
				}
				if fl.ItemName() == "" {
					t.Fatalf("accepted file %+v has no item name", fl)
				}
			}
		}
	})
}

// FuzzParseLock: the lock parser never panics, and a lock it accepts
// survives Marshal and ParseLock unchanged.
func FuzzParseLock(f *testing.F) {
	data, err := sampleLock().Marshal("fuzz")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add([]byte("apiVersion: zdt.dev/v1alpha1\nkind: Lock\nmetadata: {name: x, version: v}\nitems: []\n"))
	f.Add([]byte("apiVersion: zdt.dev/v1alpha1\nkind: Lock\nmetadata: {name: x, version: v}\nitems:\n  - {component: c, kind: image, name: a, digest: sha256:abc}\n"))
	addSeedFiles(f, filepath.Join("testdata", "errors", "multi-document.yaml"), filepath.Join("testdata", "errors", "syntax-error.yaml"))
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ParseLock("fuzz.lock.yaml", data)
		if err != nil {
			checkErrorContract(t, err, data)
			return
		}
		out, err := l.Marshal("fuzz")
		if err != nil {
			t.Fatalf("Marshal of an accepted lock: %v", err)
		}
		back, err := ParseLock("fuzz.lock.yaml", out)
		if err != nil {
			t.Fatalf("ParseLock(Marshal(l)): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(withoutPos(back), withoutPos(l)) {
			t.Fatalf("Marshal round trip changed the lock\n%+v\n%+v\n%s", l, back, out)
		}
		for _, it := range l.Items {
			if got, ok := l.Find(it.Kind, it.Name); !ok || got != it {
				t.Fatalf("Find(%q, %q) = %+v, %v", it.Kind, it.Name, got, ok)
			}
		}
	})
}
