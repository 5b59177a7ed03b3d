package manifests

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/distribution/reference"
)

// Load reads and checks the spec at path. Relative sources resolve against
// the spec's directory. The error, if any, is an ErrorList naming every
// problem as file:line:col.
func Load(path string) (*Spec, error) {
	data, err := readBounded(path)
	if err != nil {
		return nil, err
	}
	s, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(filepath.Dir(path))
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", path, err)
	}
	s.Dir = abs
	return s, nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading spec: %w", err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.Size() > maxDocBytes {
		return nil, &FieldError{File: path, Msg: fmt.Sprintf("file is larger than %d bytes", maxDocBytes)}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading spec: %w", err)
	}
	return data, nil
}

// Parse decodes and checks a spec; file is used in error messages only.
// Dir is left empty (sources resolve against the working directory).
func Parse(file string, data []byte) (*Spec, error) {
	c := &collector{file: file}
	s := &Spec{}
	decodeYAML(c, data, s)
	if len(c.errs) == c.unknown { // every error at once, unless values are missing
		validate(c, s)
	}
	if err := c.err(); err != nil {
		return nil, err
	}
	s.File = file
	s.Raw = append([]byte(nil), data...)
	return s, nil
}

var (
	reName    = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$`)
	reTag     = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$`)
	reSHA256  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	reMode    = regexp.MustCompile(`^0?[0-7]{3,4}$`)
	archs     = map[string]bool{"x86_64": true, "arm64": true, "i386": true}
	bootModes = map[string]bool{"uefi": true, "legacy-bios": true, "uefi-preferred": true}
	// diskFormats are an AMI source's formats; volumeTypes EBS's.
	diskFormats = map[string]bool{"raw": true, "qcow2": true, "vmdk": true, "vhd": true}
	volumeTypes = map[string]bool{"gp3": true, "gp2": true, "io1": true, "io2": true, "st1": true, "sc1": true, "standard": true}
	// reRepoComponent is one path component of a repository name
	// (distribution's reference grammar).
	reRepoComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)
	// reDevice is a block device name: /dev/sda1, /dev/xvdb, /dev/sdf
	// (EC2's), /dev/nvme0n1 (as the instance sees it).
	reDevice = regexp.MustCompile(`^/dev/((sd|xvd|hd)[a-z]{1,2}[0-9]{0,2}|nvme[0-9]{1,2}n[0-9]{1,2}(p[0-9]{1,2})?)$`)
)

// ParsePlatform splits os/arch[/variant].
func ParsePlatform(p string) (os, arch, variant string, err error) {
	parts := strings.Split(p, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return "", "", "", fmt.Errorf("platform %q is not os/arch[/variant]", p)
	}
	for _, x := range parts {
		if x == "" || strings.TrimSpace(x) != x {
			return "", "", "", fmt.Errorf("platform %q is not os/arch[/variant]", p)
		}
	}
	if len(parts) == 3 {
		variant = parts[2]
	}
	return parts[0], parts[1], variant, nil
}

// ImageSourceKinds are the transports a local image source may use.
var ImageSourceKinds = []string{"oci", "oci-archive", "docker-archive"}

// SplitImageSource splits "oci:DIR:TAG" into ("oci", "DIR", "TAG").
func SplitImageSource(src string) (kind, path, tag string, err error) {
	kind, rest, ok := strings.Cut(src, ":")
	if !ok || rest == "" {
		return "", "", "", fmt.Errorf("image source %q is not TRANSPORT:PATH (transports: %s)", src, strings.Join(ImageSourceKinds, ", "))
	}
	switch kind {
	case "oci", "oci-archive":
		if i := strings.LastIndex(rest, ":"); i >= 0 {
			rest, tag = rest[:i], rest[i+1:]
		}
	case "docker-archive":
	default:
		return "", "", "", fmt.Errorf("image source %q: unknown transport %q (known: %s)", src, kind, strings.Join(ImageSourceKinds, ", "))
	}
	if rest == "" {
		return "", "", "", fmt.Errorf("image source %q has no path", src)
	}
	return kind, rest, tag, nil
}

// validate checks a decoded spec, reporting every problem to c with where
// it was written.
func validate(c *collector, s *Spec) {
	v := &validator{c: c, comps: map[string]int{}, images: map[string]int{}, charts: map[string]int{},
		files: map[string]int{}, targets: map[string]int{}, targetAt: map[string]Pos{}, amis: map[string]int{}}
	v.header(s)
	for i, comp := range s.Components {
		v.component(fmt.Sprintf("components[%d]", i), comp)
	}
	nested(c, v.targetAt)
}

// validator checks a spec's values and that no component, image, chart,
// file, target or AMI is listed twice, reporting to c.
type validator struct {
	c *collector
	// The line each name was first seen at.
	comps, images, charts, files, targets, amis map[string]int
	// targetAt is where each file target was written (for nested).
	targetAt map[string]Pos
}

// at is where the value at path was written, or def.
func (v *validator) at(path string, def Pos) Pos { return v.c.pos(path, def) }

// dup reports key when seen already, and says whether it did.
func (v *validator) dup(seen map[string]int, key string, p Pos, what string) bool {
	if line, ok := seen[key]; ok {
		v.c.add(p, "%s is listed twice (first at line %d)", what, line)
		return true
	}
	seen[key] = p.Line
	return false
}

// header checks what comes before the components: apiVersion, kind,
// metadata and platforms, and that there are components.
func (v *validator) header(s *Spec) {
	c, at := v.c, v.at
	if s.APIVersion != APIVersion {
		c.add(at("apiVersion", Pos{Line: 1, Column: 1}), "apiVersion must be %q, got %q", APIVersion, s.APIVersion)
	}
	if s.Kind != KindBundle {
		c.add(at("kind", Pos{Line: 1, Column: 1}), "kind must be %q, got %q", KindBundle, s.Kind)
	}
	if !reName.MatchString(s.Metadata.Name) {
		c.add(at("metadata.name", s.Metadata.Pos), "metadata.name %q must be lowercase letters, digits, '.', '_' or '-' (at most 64)", s.Metadata.Name)
	}
	if !reTag.MatchString(s.Metadata.Version) {
		c.add(at("metadata.version", s.Metadata.Pos), "metadata.version %q must be a valid tag: letters, digits, '.', '_', '-' (at most 128)", s.Metadata.Version)
	}
	for i, p := range s.Platforms {
		if _, _, _, err := ParsePlatform(p); err != nil {
			c.add(at(fmt.Sprintf("platforms[%d]", i), Pos{}), "platforms: %v", err)
		}
	}
	if len(s.Components) == 0 {
		c.add(at("components", Pos{}), "components: at least one component is needed")
	}
}

// component checks the component at where (components[i]) and its items.
func (v *validator) component(where string, comp Component) {
	c, at := v.c, v.at
	if !reName.MatchString(comp.Name) {
		c.add(at(where+".name", comp.Pos), "%s.name %q must be lowercase letters, digits, '.', '_' or '-'", where, comp.Name)
	} else {
		v.dup(v.comps, comp.Name, at(where+".name", comp.Pos), fmt.Sprintf("component %q", comp.Name))
	}
	if len(comp.Images)+len(comp.Charts)+len(comp.Files)+len(comp.AMIs) == 0 {
		c.add(comp.Pos, "component %q has no images, charts, files or amis", comp.Name)
	}
	for j, im := range comp.Images {
		v.image(fmt.Sprintf("%s.images[%d]", where, j), im)
	}
	for j, ch := range comp.Charts {
		v.chart(fmt.Sprintf("%s.charts[%d]", where, j), ch)
	}
	for j, f := range comp.Files {
		v.file(fmt.Sprintf("%s.files[%d]", where, j), f)
	}
	for j, a := range comp.AMIs {
		v.ami(fmt.Sprintf("%s.amis[%d]", where, j), a)
	}
	v.actions(where, comp.Name, comp.Actions)
}

// image checks the image at item.
func (v *validator) image(item string, im Image) {
	c, at := v.c, v.at
	if im.Ref == "" {
		c.add(at(item+".ref", im.Pos), "image reference is empty")
		return
	}
	if _, err := NormalizeImageRef(im.Ref); err != nil {
		c.add(at(item+".ref", im.Pos), "image %q: %v", im.Ref, err)
		return
	}
	if im.Source != "" {
		if _, _, _, err := SplitImageSource(im.Source); err != nil {
			c.add(at(item+".source", im.Pos), "image %q: %v", im.Ref, err)
		}
	}
	// The same image in other spellings (busybox,
	// docker.io/library/busybox:latest) is allowed: create bundles it once.
	v.dup(v.images, im.Ref, at(item+".ref", im.Pos), fmt.Sprintf("image %q", im.Ref))
}

// chart checks the chart at item.
func (v *validator) chart(item string, ch Chart) {
	c, at := v.c, v.at
	if !reName.MatchString(ch.Name) {
		c.add(at(item+".name", ch.Pos), "chart name %q must be lowercase letters, digits, '.', '_' or '-'", ch.Name)
	}
	remote := strings.HasPrefix(ch.Source, "oci://") || strings.HasPrefix(ch.Source, "https://") || strings.HasPrefix(ch.Source, "http://")
	if remote && ch.Version == "" {
		c.add(ch.Pos, "chart %q: version is required for %s", ch.Name, ch.Source)
	}
	if ch.Namespace != "" && !reName.MatchString(ch.Namespace) {
		c.add(at(item+".namespace", ch.Pos), "chart %q: namespace %q is not a valid name", ch.Name, ch.Namespace)
	}
	v.dup(v.charts, ch.Name, at(item+".name", ch.Pos), fmt.Sprintf("chart %q", ch.Name))
	excluded := map[string]int{}
	for i, ref := range ch.Exclude {
		p := at(fmt.Sprintf("%s.exclude[%d]", item, i), ch.Pos)
		n, err := NormalizeImageRef(ref)
		if err != nil {
			c.add(p, "chart %q: exclude %q: %v", ch.Name, ref, err)
			continue
		}
		v.dup(excluded, n, p, fmt.Sprintf("chart %q: excluded image %q", ch.Name, ref))
	}
	replaced := map[string]int{}
	keys := make([]string, 0, len(ch.Images))
	for k := range ch.Images {
		keys = append(keys, k)
	}
	// In the order written, so that a repeat names the first.
	sort.Slice(keys, func(i, j int) bool {
		a, b := at(item+".images."+keys[i], ch.Pos), at(item+".images."+keys[j], ch.Pos)
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return keys[i] < keys[j]
	})
	for _, from := range keys {
		to := ch.Images[from]
		p := at(item+".images."+from, ch.Pos)
		n, err := NormalizeImageRef(from)
		if err != nil {
			c.add(p, "chart %q: images: %q: %v", ch.Name, from, err)
			continue
		}
		if _, err := NormalizeImageRef(to); err != nil {
			c.add(p, "chart %q: images: %q: fetch from %q: %v", ch.Name, from, to, err)
		}
		if line, ok := excluded[n]; ok {
			c.add(p, "chart %q: image %q is both excluded (line %d) and replaced", ch.Name, from, line)
		}
		v.dup(replaced, n, p, fmt.Sprintf("chart %q: replaced image %q", ch.Name, from))
	}
}

// file checks the file at item, and records its target for nested.
func (v *validator) file(item string, f File) {
	c, at := v.c, v.at
	if !reSHA256.MatchString(f.SHA256) {
		c.add(at(item+".sha256", f.Pos), "file %q: sha256 must be 64 lowercase hex digits, got %q", f.Source, f.SHA256)
	}
	sameTarget := false
	if err := CheckTarget(f.Target); err != nil {
		c.add(at(item+".target", f.Pos), "file %q: %v", f.Source, err)
	} else {
		sameTarget = v.dup(v.targets, f.Target, at(item+".target", f.Pos), fmt.Sprintf("target %q", f.Target))
		if !sameTarget {
			v.targetAt[f.Target] = at(item+".target", f.Pos)
		}
	}
	if f.Mode != "" && !reMode.MatchString(f.Mode) {
		c.add(at(item+".mode", f.Pos), "file %q: mode %q is not an octal mode like \"0755\"", f.Source, f.Mode)
	} else if m, _ := ParseMode(f.Mode); m&SpecialBits != 0 && !f.AllowSpecialBits {
		c.add(at(item+".mode", f.Pos), "file %q: mode %q sets setuid, setgid or sticky bits; add allowSpecialBits: true to install it so", f.Source, f.Mode)
	}
	if n := f.ItemName(); n != "" && !sameTarget { // the same target: reported once
		np := at(item+".target", f.Pos)
		if f.Name != "" {
			np = at(item+".name", f.Pos)
		}
		v.dup(v.files, n, np, fmt.Sprintf("file %q", n))
	}
}

// ami checks the AMI at item.
func (v *validator) ami(item string, a AMI) {
	c, at := v.c, v.at
	if a.Architecture != "" && !archs[a.Architecture] {
		c.add(at(item+".architecture", a.Pos), "ami %q: architecture %q is not x86_64, arm64 or i386", a.Name, a.Architecture)
	}
	if a.BootMode != "" && !bootModes[a.BootMode] {
		c.add(at(item+".bootMode", a.Pos), "ami %q: bootMode %q is not uefi, legacy-bios or uefi-preferred", a.Name, a.BootMode)
	}
	if a.Virtualization != "" && a.Virtualization != "hvm" && a.Virtualization != "paravirtual" {
		c.add(at(item+".virtualization", a.Pos), "ami %q: virtualization %q is not hvm or paravirtual", a.Name, a.Virtualization)
	}
	if a.TPM && a.BootMode != "uefi" {
		c.add(at(item+".tpm", a.Pos), "ami %q: tpm needs bootMode uefi", a.Name)
	}
	if a.SHA256 != "" && !reSHA256.MatchString(a.SHA256) {
		c.add(at(item+".sha256", a.Pos), "ami %q: sha256 must be 64 lowercase hex digits", a.Name)
	}
	if a.Format != "" && !diskFormats[a.Format] {
		c.add(at(item+".format", a.Pos), "ami %q: format %q is not raw, qcow2, vmdk or vhd", a.Name, a.Format)
	}
	if a.Size < 0 {
		c.add(at(item+".size", a.Pos), "ami %q: size %d is negative", a.Name, a.Size)
	}
	if len(a.Description) > 255 {
		c.add(at(item+".description", a.Pos), "ami %q: description is %d characters, at most 255", a.Name, len(a.Description))
	}
	if a.RootDevice != "" && !reDevice.MatchString(a.RootDevice) {
		c.add(at(item+".rootDevice", a.Pos), "ami %q: rootDevice %q is not a device name like /dev/xvda or /dev/sda1", a.Name, a.RootDevice)
	}
	if a.SriovNetSupport != "" && a.SriovNetSupport != "simple" {
		c.add(at(item+".sriovNetSupport", a.Pos), "ami %q: sriovNetSupport %q is not simple", a.Name, a.SriovNetSupport)
	}
	if a.IMDSSupport != "" && a.IMDSSupport != "v2.0" {
		c.add(at(item+".imdsSupport", a.Pos), "ami %q: imdsSupport %q is not v2.0", a.Name, a.IMDSSupport)
	}
	devices := map[string]int{}
	for i, bd := range a.BlockDeviceMappings {
		bi := fmt.Sprintf("%s.blockDeviceMappings[%d]", item, i)
		if !reDevice.MatchString(bd.DeviceName) {
			c.add(at(bi+".deviceName", bd.Pos), "ami %q: deviceName %q is not a device name like /dev/xvda or /dev/sdb", a.Name, bd.DeviceName)
		} else {
			v.dup(devices, bd.DeviceName, at(bi+".deviceName", bd.Pos), fmt.Sprintf("ami %q: device %q", a.Name, bd.DeviceName))
		}
		if bd.VolumeSize < 0 || bd.VolumeSize > 65536 {
			c.add(at(bi+".volumeSize", bd.Pos), "ami %q: volumeSize %d GiB is not between 1 and 65536", a.Name, bd.VolumeSize)
		}
		if bd.VolumeType != "" && !volumeTypes[bd.VolumeType] {
			c.add(at(bi+".volumeType", bd.Pos), "ami %q: volumeType %q is not gp3, gp2, io1, io2, st1, sc1 or standard", a.Name, bd.VolumeType)
		}
		vt := bd.VolumeType
		if vt == "" {
			vt = "gp3"
		}
		if bd.IOPS < 0 || bd.IOPS > 0 && vt != "gp3" && vt != "io1" && vt != "io2" {
			c.add(at(bi+".iops", bd.Pos), "ami %q: iops %d: only gp3, io1 and io2 volumes take iops", a.Name, bd.IOPS)
		}
		if bd.Throughput < 0 || bd.Throughput > 0 && vt != "gp3" {
			c.add(at(bi+".throughput", bd.Pos), "ami %q: throughput %d: only gp3 volumes take a throughput", a.Name, bd.Throughput)
		}
	}
	if len(a.Tags) > 50 {
		c.add(at(item+".tags", a.Pos), "ami %q: %d tags, at most 50", a.Name, len(a.Tags))
	}
	keys := make([]string, 0, len(a.Tags))
	for k := range a.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := at(item+".tags."+k, a.Pos)
		switch {
		case k == "" || len(k) > 128:
			c.add(p, "ami %q: tag key %q must be 1 to 128 characters", a.Name, k)
		case strings.HasPrefix(strings.ToLower(k), "aws:"):
			c.add(p, "ami %q: tag key %q: the aws: prefix is reserved", a.Name, k)
		case len(a.Tags[k]) > 256:
			c.add(p, "ami %q: tag %q: the value is %d characters, at most 256", a.Name, k, len(a.Tags[k]))
		}
	}
	if err := CheckAMIName(a.Name); err != nil {
		c.add(at(item+".name", a.Pos), "%v", err)
	} else if !reRepoComponent.MatchString(a.Name) {
		// Install serves it as amis/NAME:VERSION and refuses other names.
		c.add(at(item+".name", a.Pos), "ami name %q is served as the repository amis/%s: lowercase letters and digits, separated by '.', '_', '__' or '-'", a.Name, a.Name)
	}
	v.dup(v.amis, a.Name, at(item+".name", a.Pos), fmt.Sprintf("ami %q", a.Name))
}

// nested reports each target that is inside another target: the other is
// a file, so this one could never be placed.
func nested(c *collector, targets map[string]Pos) {
	for t, p := range targets {
		for d := path.Dir(t); d != "/"; d = path.Dir(d) {
			if q, ok := targets[d]; ok {
				c.add(p, "target %q is inside target %q (line %d), a file", t, d, q.Line)
				break
			}
		}
	}
}

// refProblem says why ref is not an image reference. go-containerregistry
// only says "could not parse reference"; distribution's parser names the
// reason (uppercase repository, bad tag, bad digest), so prefer its message.
func refProblem(ref string, err error) string {
	if _, err2 := reference.ParseNormalizedNamed(ref); err2 != nil {
		return err2.Error()
	}
	return err.Error()
}

func cleanAbs(p string) string {
	return filepath.ToSlash(filepath.Clean(p))
}
