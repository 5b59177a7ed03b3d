package installer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"regexp"

	"github.com/opencontainers/go-digest"

	"zdt.dev/zdt/internal/fsutil"
	"zdt.dev/zdt/internal/layout"
)

// AMISnapshot is a snapshot an AMIRegistrar uploaded and completed for an
// AMI item, journaled under the install root before an image is
// registered from it: after a crash between the registration and the
// tagging, an image found by name is adopted only when its root snapshot
// is the one journaled here.
type AMISnapshot struct {
	Item       string `json:"item"`
	ItemDigest string `json:"itemDigest"`
	Region     string `json:"region"`
	// Name is the image name it is being registered under.
	Name       string `json:"name"`
	SnapshotID string `json:"snapshotId"`
	// Checksum is the aggregate checksum the snapshot was completed with
	// (for EBS: SHA256, LINEAR, base64).
	Checksum string `json:"checksum,omitempty"`
}

// AMIJournal keeps AMISnapshot records under the install root. Install
// gives one to its AMIRegistrar in AMIBundle.Journal.
type AMIJournal interface {
	// RecordAMISnapshot writes s durably (temp, fsync, rename, directory
	// fsync), replacing the record of the same region and item digest.
	RecordAMISnapshot(ctx context.Context, s AMISnapshot) error
	// AMISnapshot is the record of region and itemDigest; ok is false
	// when there is none.
	AMISnapshot(ctx context.Context, region, itemDigest string) (s AMISnapshot, ok bool, err error)
}

// maxAMIRecord bounds a journal record read back.
const maxAMIRecord = 64 << 10

var regionRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)

// amiJournal is the AMIJournal of an install root; a nil root (a plan of
// a root not created yet) has no records and takes none.
type amiJournal struct{ root *os.Root }

func amiRecordPath(region, itemDigest string) (string, error) {
	if !regionRE.MatchString(region) {
		return "", fmt.Errorf("region %q: not a region name", region)
	}
	d, err := digest.Parse(itemDigest)
	if err != nil || d.Algorithm() != digest.SHA256 {
		return "", fmt.Errorf("item digest %q: not a sha256 digest", itemDigest)
	}
	return layout.AMISnapshot(region, d), nil
}

func (j amiJournal) RecordAMISnapshot(ctx context.Context, s AMISnapshot) error {
	p, err := amiRecordPath(s.Region, s.ItemDigest)
	if err != nil {
		return fmt.Errorf("journaling snapshot %s: %w", s.SnapshotID, err)
	}
	if j.root == nil {
		return fmt.Errorf("journaling snapshot %s: no install root", s.SnapshotID)
	}
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if _, err := fsutil.WriteAtomic(ctx, j.root, p, 0o644, func(w io.Writer) error { _, err := w.Write(b); return err }); err != nil {
		return fmt.Errorf("journaling snapshot %s: %w", s.SnapshotID, err)
	}
	return nil
}

func (j amiJournal) AMISnapshot(ctx context.Context, region, itemDigest string) (AMISnapshot, bool, error) {
	p, err := amiRecordPath(region, itemDigest)
	if err != nil {
		return AMISnapshot{}, false, err
	}
	if j.root == nil {
		return AMISnapshot{}, false, nil
	}
	b, err := fsutil.ReadFileIn(j.root, p, maxAMIRecord)
	if errors.Is(err, fs.ErrNotExist) {
		return AMISnapshot{}, false, nil
	}
	if err != nil {
		return AMISnapshot{}, false, fmt.Errorf("reading the snapshot journal: %w", err)
	}
	var s AMISnapshot
	if err := json.Unmarshal(b, &s); err != nil {
		return AMISnapshot{}, false, fmt.Errorf("reading the snapshot journal %s: %w", p, err)
	}
	// A record is only good for what its path names.
	if s.Region != region || s.ItemDigest != itemDigest || s.SnapshotID == "" {
		return AMISnapshot{}, false, fmt.Errorf("the snapshot journal %s names region %q, item %q, snapshot %q", p, s.Region, s.ItemDigest, s.SnapshotID)
	}
	return s, true, nil
}
