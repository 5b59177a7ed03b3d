// Package hashcount makes the sha256 hashers that check content (the
// copy loop of internal/fsutil, the layer and content hashes of bundle's
// content reader) and, while a test asks it to, counts the bytes they
// hash: how a test proves that install hashes each byte once.
package hashcount

import (
	"crypto/sha256"
	"hash"
	"sync/atomic"
)

// counter is the count Start set (nil: nothing is counted, and SHA256 is
// sha256.New).
var counter atomic.Pointer[atomic.Int64]

// SHA256 is sha256.New, counted while a test has called Start.
func SHA256() hash.Hash {
	h := sha256.New()
	if c := counter.Load(); c != nil {
		return &counting{Hash: h, n: c}
	}
	return h
}

// Start counts, until stop, the bytes written to the hashers SHA256
// returns from now on; stop returns their number. For tests only (the
// count is process-wide: no test that hashes may run beside it), and one
// count at a time.
func Start() (stop func() int64) {
	c := new(atomic.Int64)
	if !counter.CompareAndSwap(nil, c) {
		panic("hashcount: Start while counting")
	}
	return func() int64 {
		counter.CompareAndSwap(c, nil)
		return c.Load()
	}
}

type counting struct {
	hash.Hash
	n *atomic.Int64
}

func (c *counting) Write(p []byte) (int, error) {
	c.n.Add(int64(len(p)))
	return c.Hash.Write(p)
}
