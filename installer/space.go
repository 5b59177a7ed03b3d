package installer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"syscall"
)

// NoSpaceError says a file or disk image does not fit on its filesystem:
// found before writing it, rather than by filling the disk. It matches
// syscall.ENOSPC.
type NoSpaceError struct {
	Need, Free int64
}

func (e *NoSpaceError) Error() string {
	return fmt.Sprintf("needs %d bytes, %d free: %v", e.Need, e.Free, syscall.ENOSPC)
}

func (e *NoSpaceError) Unwrap() error { return syscall.ENOSPC }

// checkSpace refuses to write need bytes into dir (under root; the nearest
// existing parent when dir does not exist yet) when its filesystem has
// less free space than that: the blocks available to this process (root
// may use the reserved ones). A filesystem that cannot say is not refused.
func checkSpace(root *os.Root, dir string, need int64) error {
	for {
		f, err := root.Open(dir)
		if errors.Is(err, fs.ErrNotExist) && dir != "." && dir != "/" {
			dir = path.Dir(dir)
			continue
		}
		if err != nil {
			return nil // placing it will say what is wrong
		}
		var st syscall.Statfs_t
		err = syscall.Fstatfs(int(f.Fd()), &st)
		f.Close()
		if err != nil || st.Bsize <= 0 {
			return nil
		}
		blocks := st.Bavail
		if os.Geteuid() == 0 {
			blocks = st.Bfree
		}
		if free := int64(blocks) * st.Bsize; need > free {
			return &NoSpaceError{Need: need, Free: free}
		}
		return nil
	}
}
