package installer

import (
	"fmt"
	"os"
	"path/filepath"
)

// actionDir is an action's working directory, open through the install
// root. The action is started in the open directory (procPath), not at
// its path, so nothing that replaces the path between the check and the
// start (a directory swapped for a symlink out of the root) moves it.
type actionDir struct {
	f    *os.File
	path string // absolute: the directory's path when it was opened
}

// testHookActionDir, when set (tests only), runs between opening an
// action's working directory and starting the action: the window in which
// a hostile process would swap the directory for a symlink.
var testHookActionDir func(dir string)

// openActionDir opens dir (a path under the root, "" for the root itself)
// through root, whose absolute path is absRoot: a symlink that leaves the
// root is refused, as is anything but a directory. The caller closes it
// once the action has started.
func openActionDir(root *os.Root, absRoot, dir string) (*actionDir, error) {
	name, shown := ".", "/"
	if dir != "" {
		name, shown = rel(dir), dir
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, fmt.Errorf("working directory %s: %w", shown, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("working directory %s: %w", shown, err)
	}
	if !fi.IsDir() {
		f.Close()
		return nil, fmt.Errorf("working directory %s is not a directory", shown)
	}
	return &actionDir{f: f, path: filepath.Join(absRoot, filepath.FromSlash(name))}, nil
}

// Close closes the directory; a second call does nothing.
func (d *actionDir) Close() {
	if d.f != nil {
		d.f.Close()
		d.f = nil
	}
}
