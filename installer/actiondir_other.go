//go:build !linux

package installer

// procPath is the open directory's path: outside Linux there is no
// /proc/self/fd to start a process in an open directory, so the action
// starts at the path checked through the root, and a swap of it for a
// symlink between the check and the start is not caught. zdt installs
// on Linux hosts; this keeps the package building elsewhere.
func (d *actionDir) procPath() string {
	return d.path
}
