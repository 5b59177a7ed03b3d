package build

import (
	"context"
	"errors"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeTags is a layout with the given tags, none of which resolves.
type fakeTags []string

func (f fakeTags) Resolve(context.Context, string) (ocispec.Descriptor, error) {
	return ocispec.Descriptor{}, errors.New("not found")
}

func (f fakeTags) Tags(_ context.Context, _ string, fn func([]string) error) error { return fn(f) }

// TestPickTagMessages is issue 13.11's "(it has 0: )": an image not found
// in a layout names what the layout has, and says so in words when it has
// no tagged entry at all.
func TestPickTagMessages(t *testing.T) {
	for _, tc := range []struct {
		tags      fakeTags
		want, not string
	}{
		{nil, "has no tagged entries", "(it has 0"},
		{fakeTags{"1.0", "2.0"}, "(it has 2: 1.0, 2.0); add :TAG", ""},
	} {
		_, err := pickTag(context.Background(), tc.tags, "", "example.com/app:3.0")
		if err == nil || !strings.Contains(err.Error(), tc.want) || (tc.not != "" && strings.Contains(err.Error(), tc.not)) {
			t.Errorf("tags %v: error %v, want it to say %q", tc.tags, err, tc.want)
		}
	}
}
