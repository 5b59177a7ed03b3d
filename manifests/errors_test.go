package manifests

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the .golden files under testdata/ with the current output")

// TestSpecErrorsGolden loads every testdata/errors/*.yaml, which must fail,
// and compares the whole error text (every problem, file:line:col, sorted)
// with the .golden file next to it. Run `go test ./manifests -update` to
// rewrite the golden files, then read the diff.
func TestSpecErrorsGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "errors", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no inputs under testdata/errors")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			s, err := Load(in)
			if err == nil {
				t.Fatalf("Load(%s) succeeded (%d items), want an error", in, s.ItemCount())
			}
			checkInvalid(t, err, in)
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(in, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./manifests -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("errors of %s differ from %s\n--- got:\n%s--- want:\n%s", in, golden, got, want)
			}
		})
	}
}

// checkInvalid asserts the error contract: errors.Is ErrInvalid, errors.As
// *FieldError (naming the file), and an ErrorList sorted by position.
func checkInvalid(t *testing.T, err error, file string) {
	t.Helper()
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false", err)
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("errors.As(%T, *FieldError) = false", err)
	}
	if fe.File != file {
		t.Errorf("FieldError.File = %q, want %q", fe.File, file)
	}
	var list ErrorList
	if !errors.As(err, &list) {
		t.Fatalf("errors.As(%T, ErrorList) = false", err)
	}
	for i := 1; i < len(list); i++ {
		a, b := list[i-1].Pos, list[i].Pos
		if a.Line > b.Line || (a.Line == b.Line && a.Column > b.Column) {
			t.Errorf("errors not sorted: %v before %v", a, b)
		}
	}
	for _, e := range list {
		if !errors.Is(e, ErrInvalid) {
			t.Errorf("errors.Is(%v, ErrInvalid) = false for one FieldError", e)
		}
	}
}

// TestAllErrorsReported pins the counts the golden files show, so a change
// that stops collecting after the first problem fails loudly.
func TestAllErrorsReported(t *testing.T) {
	tests := []struct {
		file string
		want int
	}{
		{"many-errors.yaml", 10},
		{"missing-required.yaml", 7},
		{"wrong-kinds.yaml", 8},
		{"file-errors.yaml", 9},
		{"ami-errors.yaml", 7},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, err := Load(filepath.Join("testdata", "errors", tt.file))
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("Load = %v, want an ErrorList", err)
			}
			if len(list) != tt.want {
				t.Errorf("got %d errors, want %d:\n%v", len(list), tt.want, err)
			}
		})
	}
}

func TestFieldErrorFormat(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"with position", &FieldError{File: "zdt.yaml", Pos: Pos{3, 5}, Msg: "bad"}, "zdt.yaml:3:5: bad"},
		{"without position", &FieldError{File: "zdt.yaml", Msg: "bad"}, "zdt.yaml: bad"},
		{"from memory", &FieldError{Pos: Pos{1, 1}, Msg: "bad"}, "<input>:1:1: bad"},
		{"list", ErrorList{{Pos: Pos{1, 1}, Msg: "a"}, {Pos: Pos{2, 1}, Msg: "b"}}, "<input>:1:1: a\n<input>:2:1: b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
			if !errors.Is(tt.err, ErrInvalid) {
				t.Errorf("errors.Is(ErrInvalid) = false")
			}
		})
	}
}

// TestParseErrorWrapped: the error survives wrapping by callers.
func TestParseErrorWrapped(t *testing.T) {
	_, err := Parse("", []byte("apiVersion: x\n"))
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	wrapped := errors.Join(errors.New("loading spec"), err)
	var fe *FieldError
	if !errors.Is(wrapped, ErrInvalid) || !errors.As(wrapped, &fe) {
		t.Fatalf("wrapped error lost ErrInvalid / *FieldError: %v", wrapped)
	}
	if fe.File != "" || !strings.HasPrefix(err.Error(), "<input>:") {
		t.Errorf("in-memory error = %q, want <input>: prefix", err)
	}
}
