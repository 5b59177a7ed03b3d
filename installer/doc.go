// Package installer installs a verified bundle on a host (or under --root):
// it plans the change against the recorded state, applies it step by step
// with atomic writes, and records a new generation only when every step
// succeeded. Running the same install again changes nothing; installing a
// newer bundle is the upgrade; Rollback returns to the previous generation.
//
// State lives under ROOT/var/lib/zdt (internal/layout spells every path):
//
//	installed/NAME          the number of bundle NAME's current generation (bundles side by side)
//	current                 the same for the one bundle of a root from before that (migrated)
//	generations/N.json      what generation N installed (bundle name and digest, items, files, generated files)
//	generated.json          the files generated for all installed bundles and the serve address
//	files/sha256/<hex>      every installed file version, kept for rollback
//	backups/N/              the state as it was before generation N was installed
//	registry/               the registry storage `zdt serve` serves (registry.Store)
//	placements/<hex>.json   what each bundle in the registry storage serves (registry.Store)
//	tls/                    the CA of `zdt serve --root` (registry.OpenCA)
//	bin/<hex>, placed.json  the zdt binaries placed at /usr/local/bin/zdt (Options.Binary), kept for rollback
//	lock                    held (flock) while an install, rollback or uninstall runs
//
// Everything under ROOT is reached through an os.Root opened there, so a
// symlink leading out of ROOT is refused rather than followed.
//
// Install runs as steps: plan (against the current generation), prepare
// (temp files of an interrupted run, backup), vacate (paths changing
// hands), apply (registry import and files side by side, generated files,
// AMIs, removals, registry activation and pruning) and record.
package installer
