package installer

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
	"zdt.dev/zdt/manifests"
)

// StateDir is zdt's data directory relative to the root (layout.StateDir,
// which owns every path in it).
const StateDir = layout.StateDir

// ErrLocked is returned when another zdt holds the state lock.
var ErrLocked = errors.New("another zdt install, rollback or uninstall is running")

// ErrNoGeneration is returned by Rollback and Status when nothing is installed.
var ErrNoGeneration = errors.New("nothing is installed")

// Generation is what one successful install recorded.
type Generation struct {
	Number       int    `json:"generation"`
	BundleDigest string `json:"bundleDigest"`
	Name         string `json:"name"`
	Version      string `json:"version"`
	ToolVersion  string `json:"toolVersion"`
	// Previous is the generation this one replaced (0 for the first).
	Previous int `json:"previous"`
	// Items are the bundle's items in install order.
	Items []ItemState `json:"items"`
	// Generated are the files zdt wrote (mirror config, systemd unit),
	// path relative to the root → sha256 of their content, for every
	// bundle installed at the time (layout.GeneratedRecord has them as
	// they are now).
	Generated map[string]string `json:"generated,omitempty"`
	// ServeAddr is the address the generated files named (empty in a
	// generation recorded before bundles were installed side by side).
	ServeAddr string `json:"serveAddr,omitempty"`
	// Binary is the digest of the zdt binary the install placed at
	// BinaryTarget (Options.Binary; empty when it placed none): a
	// rollback to this generation puts it back.
	Binary string `json:"binary,omitempty"`
	// Releases are the Helm releases deployed with this generation, in
	// deploy order (empty when the install had no cluster).
	Releases []Release `json:"releases,omitempty"`
	// Source is the registry the bundle was installed from (InstallFrom;
	// nil for a bundle file).
	Source *Source `json:"source,omitempty"`
	// Metadata says the bundle's metadata (tags, manifests, configs; not
	// its layers) was imported into the registry storage: installed from
	// a registry without replicating (ImportOptions.MetadataOnly). A
	// generation installed so by a zdt from before that import has
	// Source without Metadata: nothing of it is in the registry storage.
	Metadata bool `json:"metadata,omitempty"`
	// Backup is the cluster backup taken before this generation's install
	// changed any release (nil: none changed, or no cluster).
	Backup *ClusterBackup `json:"backup,omitempty"`
	// AMIs are the machine images registered (or reused) for the bundle's
	// AMI items (empty when the install registered none).
	AMIs []AMI `json:"amis,omitempty"`
	// Actions are the component actions the install ran, in order.
	Actions []ActionRun `json:"actions,omitempty"`
	// Agent is the options of the unit of `zdt agent` the generated
	// files had with this generation (nil: no agent unit); a rollback to
	// it writes that unit again.
	Agent *AgentConfig `json:"agent,omitempty"`
	// Uninstalled marks a record that only names a cluster backup: that
	// of an uninstall of bundle Name (whose current generation was
	// Previous), taken before its releases were uninstalled, or what the
	// uninstall of the last bundle left of a generation whose backup it
	// kept. It never becomes current and no bundle's history lists it.
	Uninstalled bool `json:"uninstalled,omitempty"`
}

// ItemState is one installed item: the bundle's item as the archive
// describes it, plus what installing it produced.
type ItemState struct {
	bundle.Item
	// For files and AMIs: the sha256 and size of the content.
	FileDigest string `json:"fileDigest,omitempty"`
	FileSize   int64  `json:"fileSize,omitempty"`
	// Placed is the target as zdt left it, so a re-install need not re-hash it.
	Placed *Placed `json:"placed,omitempty"`
}

func (it ItemState) key() string { return it.Kind + " " + it.Name }

// state is an open state directory under a root.
type state struct {
	root *os.Root // the install root
	lock *os.File
}

// openState opens (creating) ROOT/var/lib/zdt, takes its lock and
// migrates a root from before installations were keyed by name.
func openState(root *os.Root) (*state, error) {
	if err := root.MkdirAll(StateDir, 0o755); err != nil {
		return nil, fmt.Errorf("creating state dir: %w", err)
	}
	for _, d := range []string{layout.GenerationsDir, layout.FilesDir, layout.BackupsDir} {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("creating state dir: %w", err)
		}
	}
	f, err := root.OpenFile(layout.Lock, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening state lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, fmt.Errorf("locking state: %w", err)
	}
	s := &state{root: root, lock: f}
	if err := s.migrate(); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *state) close() {
	syscall.Flock(int(s.lock.Fd()), syscall.LOCK_UN)
	s.lock.Close()
}

// Installations are keyed by bundle name: layout.Installed(NAME) holds the
// number of NAME's current generation. Generation numbers are shared by
// all names (one sequence under generations/), so a backup or a generation
// record never belongs to two bundles.

// ErrAmbiguousName is returned when several bundles are installed and a
// command that acts on one was not told which (--name).
var ErrAmbiguousName = errors.New("several bundles are installed")

// ErrNotInstalled is returned when the bundle named by --name is not installed.
var ErrNotInstalled = errors.New("bundle is not installed")

// installedNames reads every installed bundle's current generation number
// by name. A root from before installations were keyed by name has only
// layout.Current: it counts as the pointer of its generation's bundle,
// unless that bundle's pointer exists already (a migration interrupted
// after writing it).
func installedNames(root *os.Root) (map[string]int, error) {
	out := map[string]int{}
	f, err := root.Open(layout.InstalledDir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("reading installed bundles: %w", err)
	default:
		names, err := f.Readdirnames(-1)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("reading installed bundles: %w", err)
		}
		for _, name := range names {
			if strings.HasPrefix(name, ".") { // temp files of an interrupted write
				continue
			}
			if err := manifests.CheckBundleName(name); err != nil {
				return nil, fmt.Errorf("state file %s: %w", layout.Installed(name), err)
			}
			n, err := readPointer(root, layout.Installed(name))
			if err != nil {
				return nil, err
			}
			out[name] = n
		}
	}
	legacy, err := readPointer(root, layout.Current)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	g, err := (&state{root: root}).generation(legacy)
	if err != nil {
		return nil, err
	}
	if err := manifests.CheckBundleName(g.Name); err != nil {
		return nil, fmt.Errorf("generation %d: %w", legacy, err)
	}
	if _, ok := out[g.Name]; !ok {
		out[g.Name] = legacy
	}
	return out, nil
}

// readPointer reads a generation number from a state file.
func readPointer(root *os.Root, rel string) (int, error) {
	b, err := root.ReadFile(rel)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return 0, err
		}
		return 0, fmt.Errorf("reading %s: %w", rel, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("state file %s is corrupt (%q)", rel, b)
	}
	return n, nil
}

// migrate moves a root from before installations were keyed by name to
// the keyed layout: the legacy pointer's bundle gets its own pointer
// (written atomically), then the legacy pointer goes. A crash in between
// leaves both, which read the same; the next run finishes. Called with the
// lock held.
func (s *state) migrate() error {
	legacy, err := readPointer(s.root, layout.Current)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	g, err := s.generation(legacy)
	if err != nil {
		return err
	}
	if err := manifests.CheckBundleName(g.Name); err != nil {
		return fmt.Errorf("migrating generation %d: %w", legacy, err)
	}
	if _, err := readPointer(s.root, layout.Installed(g.Name)); errors.Is(err, fs.ErrNotExist) {
		if err := s.setCurrent(g.Name, legacy); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	if err := s.root.Remove(layout.Current); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("migrating %s: %w", layout.Current, err)
	}
	return fsutil.SyncDir(s.root, layout.StateDir)
}

// current returns the current generation of the bundle named name, or nil
// when it is not installed.
func (s *state) current(name string) (*Generation, error) {
	names, err := installedNames(s.root)
	if err != nil {
		return nil, err
	}
	n, ok := names[name]
	if !ok {
		return nil, nil
	}
	return s.generation(n)
}

// installed returns the current generation of every installed bundle,
// sorted by name.
func (s *state) installed() ([]*Generation, error) {
	names, err := installedNames(s.root)
	if err != nil {
		return nil, err
	}
	var out []*Generation
	for _, name := range sortedNames(names) {
		g, err := s.generation(names[name])
		if err != nil {
			return nil, err
		}
		if g.Name != name {
			return nil, fmt.Errorf("state file %s names generation %d, which is of bundle %q", layout.Installed(name), g.Number, g.Name)
		}
		out = append(out, g)
	}
	return out, nil
}

// resolve picks the installed bundle a command acts on: name when given
// (ErrNotInstalled when it is not installed), else the only installed
// one (ErrNoGeneration when none is, ErrAmbiguousName when several are).
func resolve(installed []*Generation, name string) (*Generation, error) {
	var names []string
	for _, g := range installed {
		if name != "" && g.Name == name {
			return g, nil
		}
		names = append(names, g.Name)
	}
	switch {
	case name != "":
		if len(names) == 0 {
			return nil, fmt.Errorf("%q: %w (nothing is installed)", name, ErrNotInstalled)
		}
		return nil, fmt.Errorf("%q: %w (installed: %s)", name, ErrNotInstalled, strings.Join(names, ", "))
	case len(installed) == 0:
		return nil, ErrNoGeneration
	case len(installed) > 1:
		return nil, fmt.Errorf("%w (%s): choose one with --name", ErrAmbiguousName, strings.Join(names, ", "))
	}
	return installed[0], nil
}

// others are the installed generations of every bundle but name.
func others(installed []*Generation, name string) []*Generation {
	var out []*Generation
	for _, g := range installed {
		if g.Name != name {
			out = append(out, g)
		}
	}
	return out
}

func sortedNames(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for n := range m {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

func (s *state) generation(n int) (*Generation, error) {
	b, err := s.root.ReadFile(layout.Generation(n))
	if err != nil {
		return nil, fmt.Errorf("reading generation %d: %w", n, err)
	}
	var g Generation
	if err := json.Unmarshal(b, &g); err != nil {
		return nil, fmt.Errorf("generation %d is corrupt: %w", n, err)
	}
	return &g, nil
}

// generations lists recorded generation numbers, ascending.
func (s *state) generations() ([]int, error) {
	f, err := s.root.Open(layout.GenerationsDir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, n := range names {
		if v, err := strconv.Atoi(strings.TrimSuffix(n, ".json")); err == nil && strings.HasSuffix(n, ".json") {
			out = append(out, v)
		}
	}
	sort.Ints(out)
	return out, nil
}

// record writes generation g and makes it its bundle's current one: the
// generation file first, then the pointer, each atomically. A crash before
// the pointer moves leaves the previous generation current.
func (s *state) record(g *Generation) error {
	if err := manifests.CheckBundleName(g.Name); err != nil {
		return err
	}
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(s.root, layout.Generation(g.Number), b, 0o644); err != nil {
		return fmt.Errorf("recording generation %d: %w", g.Number, err)
	}
	return s.setCurrent(g.Name, g.Number)
}

func (s *state) setCurrent(name string, n int) error {
	if err := s.root.MkdirAll(layout.InstalledDir, 0o755); err != nil {
		return fmt.Errorf("switching %s to generation %d: %w", name, n, err)
	}
	if err := fsutil.WriteFileAtomic(s.root, layout.Installed(name), []byte(strconv.Itoa(n)+"\n"), 0o644); err != nil {
		return fmt.Errorf("switching %s to generation %d: %w", name, n, err)
	}
	return nil
}

// unsetCurrent removes name's pointer: it is no longer installed.
func (s *state) unsetCurrent(name string) error {
	if err := s.root.Remove(layout.Installed(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("uninstalling %s: %w", name, err)
	}
	return fsutil.SyncDir(s.root, layout.InstalledDir)
}

// nextNumber is one more than the highest generation ever recorded.
func (s *state) nextNumber() (int, error) {
	gens, err := s.generations()
	if err != nil {
		return 0, err
	}
	if len(gens) == 0 {
		return 1, nil
	}
	return gens[len(gens)-1] + 1, nil
}
