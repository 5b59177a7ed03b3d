package installer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	"zdt.dev/zdt/internal/fsutil"
)

// removeStaleTemps deletes temp files an interrupted run left in dirs
// (relative to root; missing dirs are skipped). Only zdt's own temp names
// are touched.
func removeStaleTemps(root *os.Root, dirs []string) error {
	seen := map[string]bool{}
	for _, d := range dirs {
		if seen[d] {
			continue
		}
		seen[d] = true
		f, err := root.Open(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			continue // not a directory
		}
		for _, n := range names {
			if strings.HasPrefix(n, fsutil.TempPrefix) {
				if err := root.Remove(path.Join(d, n)); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("removing stale temp file: %w", err)
				}
			}
		}
	}
	return nil
}
