// Package asynchash writes to a hash from a goroutine of its own, so that a
// second hash of the same stream (the raw disk beside its compression, a
// file's decoded content beside its layer) runs on another core.
package asynchash

import "hash"

const (
	// Chunk is the size of the buffers Buffer returns.
	Chunk = 1 << 20
	// Depth is how many chunks are in flight at most (4 MiB).
	Depth = 4
)

// Hash feeds h from a goroutine: Write hands over a copy (at most Depth
// chunks in flight) and returns; Buffer and Hand do the same without the
// copy; Wait ends the goroutine, after which h holds every byte written.
// Not safe for concurrent use.
type Hash struct {
	h          hash.Hash
	work, free chan []byte
	done       chan struct{}
	closed     bool
}

// New starts the goroutine that writes to h.
func New(h hash.Hash) *Hash {
	a := &Hash{h: h, work: make(chan []byte, Depth), free: make(chan []byte, Depth), done: make(chan struct{})}
	for range Depth {
		a.free <- nil
	}
	go func() {
		defer close(a.done)
		for b := range a.work {
			a.h.Write(b)
			a.free <- b
		}
	}()
	return a
}

// Write hands a copy of p to the hasher; it never fails (io.Writer).
func (a *Hash) Write(p []byte) (int, error) {
	if len(p) == 0 || a.closed {
		return len(p), nil
	}
	b := <-a.free
	a.work <- append(b[:0], p...)
	return len(p), nil
}

// Buffer returns a buffer of Chunk bytes to fill and Hand over.
func (a *Hash) Buffer() []byte {
	b := <-a.free
	if cap(b) < Chunk {
		b = make([]byte, Chunk)
	}
	return b[:cap(b)]
}

// Hand gives b, which Buffer returned, to the hasher, which writes b to
// the hash and then reuses it.
func (a *Hash) Hand(b []byte) {
	if a.closed {
		return
	}
	a.work <- b
}

// Wait ends the goroutine; the hash then holds every byte written. It may
// be called more than once.
func (a *Hash) Wait() {
	if !a.closed {
		a.closed = true
		close(a.work)
	}
	<-a.done
}
