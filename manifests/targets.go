package manifests

import (
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
)

// SpecialBits are the bits of a ParseMode result (setuid 04000, setgid
// 02000, sticky 01000) a file keeps only with allowSpecialBits.
const SpecialBits os.FileMode = 0o7000

// ParseMode parses an octal mode ("0755", "4755") as its Unix bits; "" is
// 0644. FileMode converts the result for os.Chmod.
func ParseMode(s string) (os.FileMode, error) {
	if s == "" {
		return 0o644, nil
	}
	m, err := strconv.ParseUint(s, 8, 32)
	if err != nil || m > 0o7777 {
		return 0, fmt.Errorf("mode %q is not octal", s)
	}
	return os.FileMode(m), nil
}

// FileMode converts Unix mode bits (a ParseMode result) to an os.FileMode:
// 04000, 02000 and 01000 become os.ModeSetuid, os.ModeSetgid and
// os.ModeSticky, which os.Chmod sets.
func FileMode(unix os.FileMode) os.FileMode {
	mode := unix & 0o777
	if unix&0o4000 != 0 {
		mode |= os.ModeSetuid
	}
	if unix&0o2000 != 0 {
		mode |= os.ModeSetgid
	}
	if unix&0o1000 != 0 {
		mode |= os.ModeSticky
	}
	return mode
}

// CheckTarget says what is wrong with a file target, or nil: it must be a
// clean absolute path to a file (not "/"), with no control characters, and
// not one of the paths zdt install owns (see ReservedTarget).
func CheckTarget(target string) error {
	if !strings.HasPrefix(target, "/") || target == "/" || cleanAbs(target) != target {
		return fmt.Errorf("target %q must be a clean absolute path to a file", target)
	}
	if strings.ContainsFunc(target, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("target %q has a control character", target)
	}
	if why := ReservedTarget(target); why != "" {
		return fmt.Errorf("target %q %s", target, why)
	}
	return nil
}

// reserved are the paths zdt install writes itself, as absolute paths
// under the root; "*" matches one path element. tree marks a directory
// whose whole content is zdt's.
var reserved = []struct {
	pattern string
	what    string
	tree    bool
}{
	{"/var/lib/zdt", "zdt's state directory", true},
	{"/etc/systemd/system/zdt-serve.service", "the systemd unit of zdt serve", false},
	{"/etc/systemd/system/zdt-agent.service", "the systemd unit of zdt agent", false},
	{"/etc/zdt/agent", "the zdt agent's trust directory", true},
	{"/usr/local/bin/zdt", "the zdt binary the systemd unit of zdt serve runs", false},
	{"/etc/containers/registries.conf.d/50-zdt.conf", "the containers registries.conf drop-in", false},
	{"/etc/containerd/certs.d/*/hosts.toml", "the containerd mirror configuration", false},
	{"/etc/containerd/certs.d/*/zdt-ca.crt", "zdt's CA for containerd", false},
	{"/etc/containers/certs.d/*/zdt-ca.crt", "zdt's CA for podman, cri-o and skopeo", false},
	{"/etc/docker/certs.d/*/zdt-ca.crt", "zdt's CA for docker", false},
}

// ReservedTarget says why a clean absolute target is a path zdt install
// writes itself (its state directory, the mirror configuration, the
// systemd unit) or a directory above one, or "" when a file may be placed
// there. A file there would be overwritten by install, or break it.
func ReservedTarget(target string) string {
	t := strings.Split(strings.TrimPrefix(target, "/"), "/")
	for _, r := range reserved {
		p := strings.Split(strings.TrimPrefix(r.pattern, "/"), "/")
		n := min(len(t), len(p))
		match := true
		for i := 0; i < n && match; i++ {
			ok, _ := path.Match(p[i], t[i])
			match = ok
		}
		switch {
		case !match:
		case len(t) == len(p) && r.tree:
			return fmt.Sprintf("is %s %s", r.what, r.pattern)
		case len(t) == len(p):
			return fmt.Sprintf("is %s (%s), which zdt install writes", r.what, r.pattern)
		case len(t) < len(p):
			return fmt.Sprintf("is a directory above %s (%s), which zdt install writes", r.what, r.pattern)
		case r.tree:
			return fmt.Sprintf("is inside %s %s", r.what, r.pattern)
		}
	}
	return ""
}

// CheckAMIName says what is wrong with an AMI name, or nil: install exports
// NAME.img and NAME.json, so a name is one path element.
func CheckAMIName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, `/\`) ||
		strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return fmt.Errorf("ami name %q must be one path element: no '/', '\\' or control characters, not '.' or '..'", name)
	}
	return nil
}

// CheckBundleName says what is wrong with a bundle name, or nil: the rule
// of metadata.name (lowercase letters, digits, '.', '_' or '-', at most
// 64, starting and ending with a letter or digit). Install keys its state
// by the name (a file per installed bundle), and a bundle is not trusted
// to have been made by `zdt bundle create`, which refuses the same names.
func CheckBundleName(name string) error {
	if !reName.MatchString(name) {
		return fmt.Errorf("bundle name %q must be lowercase letters, digits, '.', '_' or '-' (at most 64)", name)
	}
	return nil
}
