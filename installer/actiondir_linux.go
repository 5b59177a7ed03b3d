package installer

import "strconv"

// procPath is the path the action's process changes into: the open
// directory's descriptor in /proc. os/exec changes directory in the child
// after fork and before exec (syscall.forkAndExecInChild: chdir comes
// before the descriptors are rearranged and before exec closes the
// close-on-exec ones), and the child shares no descriptor table with zdt,
// so /proc/self/fd/N there is this very directory, whatever its path
// names by then. The directory stays open until cmd.Start returns, which
// is after the child's exec. Linux only: needs /proc mounted.
func (d *actionDir) procPath() string {
	return "/proc/self/fd/" + strconv.Itoa(int(d.f.Fd()))
}
