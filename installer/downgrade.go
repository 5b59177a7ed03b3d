package installer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// ErrDowngrade is matched by a bundle RefuseDowngrade (CheckUpgrade)
// refused: another bundle than the one installed, or an older version.
var ErrDowngrade = errors.New("not an upgrade of the installed bundle")

// DowngradeError is a bundle refused by CheckUpgrade: Name and Version
// are the refused bundle's (from its signed metadata), Installed what is
// installed ("NAME VERSION", or several of them for another name).
type DowngradeError struct {
	Name, Version string
	Installed     string
	// Reason says why: another bundle, an older version, versions that
	// do not compare.
	Reason string
}

func (e *DowngradeError) Error() string {
	return fmt.Sprintf("bundle %s %s: %s (installed: %s): %v", e.Name, e.Version, e.Reason, e.Installed, ErrDowngrade)
}

func (e *DowngradeError) Unwrap() error { return ErrDowngrade }

// CheckUpgrade reports whether installing bundle name at version under
// rootDir is an install or an upgrade, without writing anything: nothing
// is installed, or name is installed and version is not lower than its
// installed version. Versions compare as semantic versions (an optional
// leading "v"; 1.2.3-1 is lower than 1.2.3, 1.2.3-0 lower than 1.2.3-1)
// when both parse as such; otherwise only the same version string is no
// downgrade (zdt cannot tell which of two free-form versions is newer).
// A bundle of another name while other bundles are installed is refused:
// a node runs the bundle it was installed with. Refusals are
// *DowngradeError (ErrDowngrade).
func CheckUpgrade(rootDir, name, version string) error {
	if rootDir == "" {
		rootDir = "/"
	}
	root, err := os.OpenRoot(rootDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening root %s: %w", rootDir, err)
	}
	defer root.Close()
	installed, err := readInstalled(root)
	if err != nil {
		return err
	}
	if len(installed) == 0 {
		return nil
	}
	var names []string
	for _, g := range installed {
		if g.Name == name {
			return compareVersions(name, version, g.Version)
		}
		names = append(names, g.Name+" "+g.Version)
	}
	return &DowngradeError{Name: name, Version: version, Installed: strings.Join(names, ", "), Reason: "another bundle than the one installed here"}
}

// compareVersions refuses version when it is lower than installed (see
// CheckUpgrade).
func compareVersions(name, version, installed string) error {
	if version == installed {
		return nil
	}
	nv, err1 := semver.StrictNewVersion(strings.TrimPrefix(version, "v"))
	iv, err2 := semver.StrictNewVersion(strings.TrimPrefix(installed, "v"))
	switch {
	case err1 != nil || err2 != nil:
		return &DowngradeError{Name: name, Version: version, Installed: name + " " + installed,
			Reason: "the versions are not both semantic versions, so which is newer is unknown"}
	case nv.LessThan(iv):
		return &DowngradeError{Name: name, Version: version, Installed: name + " " + installed, Reason: "older than the installed version"}
	}
	return nil
}
