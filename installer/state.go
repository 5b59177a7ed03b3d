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
	// path relative to the root → sha256 of their content.
	Generated map[string]string `json:"generated,omitempty"`
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

// openState opens (creating) ROOT/var/lib/zdt and takes its lock.
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
	return &state{root: root, lock: f}, nil
}

func (s *state) close() {
	syscall.Flock(int(s.lock.Fd()), syscall.LOCK_UN)
	s.lock.Close()
}

// current returns the current generation, or nil when nothing is installed.
func (s *state) current() (*Generation, error) {
	b, err := s.root.ReadFile(layout.Current)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading current generation: %w", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return nil, fmt.Errorf("state file %s is corrupt (%q)", layout.Current, b)
	}
	return s.generation(n)
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

// record writes generation g and makes it current: the generation file
// first, then the pointer, each atomically. A crash before the pointer
// moves leaves the previous generation current.
func (s *state) record(g *Generation) error {
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return err
	}
	if err := fsutil.WriteFileAtomic(s.root, layout.Generation(g.Number), b, 0o644); err != nil {
		return fmt.Errorf("recording generation %d: %w", g.Number, err)
	}
	return s.setCurrent(g.Number)
}

func (s *state) setCurrent(n int) error {
	if err := fsutil.WriteFileAtomic(s.root, layout.Current, []byte(strconv.Itoa(n)+"\n"), 0o644); err != nil {
		return fmt.Errorf("switching to generation %d: %w", n, err)
	}
	return nil
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
