//go:build tools

// Package tools pins the oras CLI, which `go install oras.land/oras/cmd/oras@v1.3.2`
// cannot fetch through this machine's module proxy.
package tools

import _ "oras.land/oras/cmd/oras"
