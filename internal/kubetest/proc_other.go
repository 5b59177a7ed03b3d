//go:build !linux

package kubetest

import "os/exec"

// dieWithParent: only Linux has a parent-death signal; elsewhere Stop (via
// t.Cleanup) and etcd's stdin watch are what end the children.
func dieWithParent(cmd *exec.Cmd) {}
