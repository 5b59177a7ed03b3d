package bundle

// Internals the external tests (package bundle_test, which can import
// bundle/build for fixtures without a cycle) reach.
var (
	Header           = header
	NewContentReader = newContentReader
	SameDescriptor   = sameDescriptor
)

const (
	DirSHA256   = dirSHA256
	EntryIndex  = entryIndex
	EntryLayout = entryLayout
)
