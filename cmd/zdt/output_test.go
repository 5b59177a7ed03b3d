package main

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/installer"
	"zdt.dev/zdt/registry"
)

// TestJSONOutputFieldNames pins the field names of every --output json
// document (scripts depend on them) and their order, which is the order
// the maps they replaced printed (sorted).
func TestJSONOutputFieldNames(t *testing.T) {
	for _, c := range []struct {
		doc  any
		want string
	}{
		{createOutput{Base: &createBase{}, SignedBy: "x", SigstoreBundle: "x"}, "base blobs discovered fetch items lockFile path root rootRepository sha256 signedBy sigstoreBundle size uniqueSize"},
		{createOutput{}, "blobs discovered fetch items lockFile path root rootRepository sha256 size uniqueSize"},
		{createBase{}, "blobs path root size"},
		{inspectOutput{}, "archiveSize base blobs description items name platforms root rootRepository toolVersion totalSize uniqueSize version"},
		{verifyOutput{}, "blobs bytes items root signature verified"},
		{extractOutput{}, "dir root"},
		{versionOutput{}, "version"},
		{pushOutput{}, "placements root target"},
		{serveOutput{}, "ca readOnly repositories serving url"},
		{keyOutput{}, "fingerprint privateKey publicKey trustedRoot"},
		// uninstall: installer.Result's fields, with filesWritten (which
		// counted the files removed) named for what it counts.
		{uninstallOutput{}, "plan generation applied filesRemoved"},
		{cacheLsOutput{}, "dir entries totals"},
		{cachePruneOutput{}, "dir kept removed removedSize"},
		{build.CacheEntry{}, "digest kind lastUsed size"},
		{build.CacheTotals{}, "blobs entries manifests partials size"},
		{statusOutput{}, "installed"},
		{statusOutput{Bundles: []statusBundle{{}}, Counts: map[string]int{"x": 1}, Current: &installer.Generation{}, Drift: []string{""}, Extra: map[string]string{"": ""},
			Generations: []int{1}, Registry: &registry.Health{}, Backups: []installer.ClusterBackup{{}}}, "installed current counts drift generations registry extra bundles backups"},
		{installer.ClusterBackup{}, "generation kind path recorded size time"},
		{statusBundle{}, "counts current generations name"},
		{progressLine{}, "done phase total"},
		{warningLine{}, "bundle root warning"},
		{errorLine{}, "error exitCode"},
	} {
		name := reflect.TypeOf(c.doc).Name()
		b, err := json.Marshal(c.doc)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var keys []string
		dec := json.NewDecoder(strings.NewReader(string(b)))
		dec.Token() // {
		for dec.More() {
			k, _ := dec.Token()
			keys = append(keys, k.(string))
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if got := strings.Join(keys, " "); got != c.want {
			t.Errorf("%s prints %q, want %q", name, got, c.want)
		}
		// uninstall and status keep the order of the installer types
		// they printed before.
		if !strings.HasPrefix(c.want, "plan generation") && !strings.HasPrefix(c.want, "installed current") && !slices.IsSorted(keys) {
			t.Errorf("%s: fields not in sorted order: %v", name, keys)
		}
	}
}
