package fsutil

import (
	"errors"
	"fmt"
	"io/fs"
)

// ErrOutsideRoot: a path under an install root goes through a symlink
// leading out of the root, which os.Root refuses to follow. Errors that
// os.Root returned for that reason are marked with it by MarkOutside.
var ErrOutsideRoot = errors.New("path leads out of the install root")

// Escapes reports whether err is os.Root's refusal of a path that leaves
// the root (through a symlink, or "..").
func Escapes(err error) bool {
	var pe *fs.PathError
	// os.errPathEscapes is not exported; its text is its identity.
	return errors.As(err, &pe) && pe.Err != nil && pe.Err.Error() == "path escapes from parent"
}

// MarkOutside returns err, made to match ErrOutsideRoot when os.Root
// refused a path leading out of the root somewhere in its chain.
func MarkOutside(err error) error {
	if err == nil || errors.Is(err, ErrOutsideRoot) || !Escapes(err) {
		return err
	}
	return &outsideError{err}
}

type outsideError struct{ err error }

func (e *outsideError) Error() string {
	return fmt.Sprintf("%v (a symlink leads out of the install root: refused)", e.err)
}

func (e *outsideError) Unwrap() []error { return []error{e.err, ErrOutsideRoot} }
