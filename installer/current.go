package installer

import (
	"errors"
	"io/fs"
	"os"
)

// CurrentGenerations reads the current generation of every bundle
// installed under rootDir, sorted by name (none when nothing is, or
// rootDir does not exist yet), without locking or writing anything: what
// `zdt agent` compares with the rollout's digest. A `zdt rollback` makes
// the previous generation current, so it is what the root holds now.
func CurrentGenerations(rootDir string) ([]*Generation, error) {
	if rootDir == "" {
		rootDir = "/"
	}
	root, err := os.OpenRoot(rootDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer root.Close()
	return readInstalled(root)
}
