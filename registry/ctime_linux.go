package registry

import (
	"os"
	"syscall"
	"time"
)

// changeTime is a file's status change time (ctime), which no write can
// set back; the modification time when unknown.
func changeTime(fi os.FileInfo) time.Time {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return time.Unix(st.Ctim.Sec, st.Ctim.Nsec)
	}
	return fi.ModTime()
}
