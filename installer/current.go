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

// ServesWhole reports whether the bundle called name is installed under
// rootDir and served whole by this node: installed from a file, or --from
// with --replicate. `zdt agent` upgrades such a node with Replicate, so a
// rolling upgrade keeps a node that serves the bundle serving it (an
// upgrade changes the bundle, not how the node holds it).
func ServesWhole(rootDir, name string) (bool, error) {
	gens, err := CurrentGenerations(rootDir)
	if err != nil {
		return false, err
	}
	for _, g := range gens {
		if g.Name == name {
			return g.servedHere(), nil
		}
	}
	return false, nil
}
