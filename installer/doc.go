// Package installer installs a verified bundle on a host (or under --root):
// it plans the change against the recorded state, applies it step by step
// with atomic writes, and records a new generation only when every step
// succeeded. Running the same install again changes nothing; installing a
// newer bundle is the upgrade; Rollback returns to the previous generation.
//
// State lives under ROOT/var/lib/zdt:
//
//	current                 the number of the current generation
//	generations/N.json      what generation N installed (bundle digest, items, files, generated files)
//	files/sha256/<hex>      every installed file version, kept for rollback
//	backups/N/              the state as it was before generation N was installed
//	registry/               the registry storage `zdt serve` serves
//	lock                    held (flock) while an install, rollback or uninstall runs
package installer
