// Command mkquickstart generates the inputs of examples/quickstart that are
// not checked in: the hello image (built from examples/quickstart/hello for
// linux/amd64 and linux/arm64) as an OCI layout, a tools image as a
// `docker save` tarball sharing the hello image's base layer, and a small
// sparse raw disk image for the AMI item. No downloads.
package main

import (
	"flag"
	"fmt"
	"os"

	"zdt.dev/zdt/internal/fixtures"
)

func main() {
	dir := flag.String("dir", "examples/quickstart", "quickstart directory")
	flag.Parse()
	if err := fixtures.Quickstart(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "mkquickstart:", err)
		os.Exit(1)
	}
}
