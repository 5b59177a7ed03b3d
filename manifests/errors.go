package manifests

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every spec or lock validation error.
var ErrInvalid = errors.New("invalid")

// FieldError is one problem in a spec or lock file, at a position.
type FieldError struct {
	File string // "" when parsed from memory
	Pos  Pos
	Msg  string
}

func (e *FieldError) Error() string {
	file := e.File
	if file == "" {
		file = "<input>"
	}
	if e.Pos.Line == 0 {
		return file + ": " + e.Msg
	}
	return fmt.Sprintf("%s:%d:%d: %s", file, e.Pos.Line, e.Pos.Column, e.Msg)
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// ErrorList is every problem found in one file, sorted by position.
type ErrorList []*FieldError

func (l ErrorList) Error() string {
	var b strings.Builder
	for i, e := range l {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}

// Is makes errors.Is(err, ErrInvalid) true.
func (l ErrorList) Is(target error) bool { return target == ErrInvalid }

// Unwrap gives the individual errors (errors.As finds a *FieldError).
func (l ErrorList) Unwrap() []error {
	out := make([]error, len(l))
	for i, e := range l {
		out[i] = e
	}
	return out
}

type collector struct {
	file string
	errs ErrorList
	// unknown counts unknown-field errors: they leave every known value
	// decoded, so validation can still run and report its errors too.
	unknown int
	// at is where each decoded value was written, by its path in messages
	// ("components[0].images[1].ref"), so checks after decoding can point
	// at the exact value.
	at map[string]Pos
}

// pos is where the value at path was written, or def when it was not.
func (c *collector) pos(path string, def Pos) Pos {
	if p, ok := c.at[path]; ok {
		return p
	}
	return def
}

func (c *collector) add(p Pos, format string, args ...any) {
	c.errs = append(c.errs, &FieldError{File: c.file, Pos: p, Msg: fmt.Sprintf(format, args...)})
}

func (c *collector) err() error {
	if len(c.errs) == 0 {
		return nil
	}
	sort.SliceStable(c.errs, func(i, j int) bool {
		a, b := c.errs[i].Pos, c.errs[j].Pos
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Column < b.Column
	})
	return c.errs
}
