//go:build !linux

package registry

import (
	"os"
	"time"
)

// changeTime is the modification time where ctime is not read.
func changeTime(fi os.FileInfo) time.Time { return fi.ModTime() }
