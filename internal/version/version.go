// Package version holds zdt's version, set at build time with
// -ldflags "-X zdt.dev/zdt/internal/version.Version=v1.2.3".
package version

import "runtime/debug"

// Version is zdt's version; "dev" unless set at build time.
var Version = "dev"

// String is the version, with the VCS revision for dev builds when known.
func String() string {
	if Version != "dev" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return Version
}
