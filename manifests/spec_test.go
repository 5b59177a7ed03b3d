package manifests

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// fullSpec has every kind of item in every form; the line numbers in
// TestParse depend on its layout.
const fullSpec = `apiVersion: zdt.dev/v1alpha1
kind: Bundle
metadata:
  name: demo
  version: 1.2.3
  description: every kind of item
platforms: [linux/amd64, linux/arm64/v8]
components:
  - name: runtime
    images:
      - registry.example.com/team/web:1.0
      - ref: docker.io/library/busybox:1.36
        source: oci:images/busybox:1.36
      - ref: zdt.example/tools@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
        source: docker-archive:images/tools.tar
    files:
      - source: https://example.com/tool
        sha256: 21282e868775aad07a944e8e292bbab99ac85d27e439a32cb5d03dbbf006c7f1
        target: /usr/local/bin/tool
        mode: "0755"
      - name: config
        source: files/app.conf
        sha256: 0000000000000000000000000000000000000000000000000000000000000000
        target: /etc/app/app.conf
  - name: app
    charts:
      - name: web
        source: oci://registry.example.com/charts/web
        version: 2.0.0
        namespace: web-ns
        release: web-release
        values: values/web.yaml
      - name: local
        source: charts/local
  - name: node
    amis:
      - name: node-image
        source: disk/node.raw
        sha256: 1111111111111111111111111111111111111111111111111111111111111111
        description: the node
        architecture: arm64
        bootMode: uefi
        virtualization: hvm
        rootDevice: /dev/nvme0n1
        ena: true
        tpm: true
      - name: minimal
        source: disk/min.qcow2
`

func TestParse(t *testing.T) {
	s, err := Parse("zdt.yaml", []byte(fullSpec))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := &Spec{
		APIVersion: APIVersion,
		Kind:       KindBundle,
		Metadata:   Metadata{Name: "demo", Version: "1.2.3", Description: "every kind of item", Pos: Pos{4, 3}},
		Platforms:  []string{"linux/amd64", "linux/arm64/v8"},
		Components: []Component{
			{
				Name: "runtime",
				Pos:  Pos{9, 5},
				Images: []Image{
					{Ref: "registry.example.com/team/web:1.0", Pos: Pos{11, 9}},
					{Ref: "docker.io/library/busybox:1.36", Source: "oci:images/busybox:1.36", Pos: Pos{12, 9}},
					{Ref: "zdt.example/tools@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
						Source: "docker-archive:images/tools.tar", Pos: Pos{14, 9}},
				},
				Files: []File{
					{Source: "https://example.com/tool", SHA256: "21282e868775aad07a944e8e292bbab99ac85d27e439a32cb5d03dbbf006c7f1",
						Target: "/usr/local/bin/tool", Mode: "0755", Pos: Pos{17, 9}},
					{Name: "config", Source: "files/app.conf", SHA256: strings.Repeat("0", 64),
						Target: "/etc/app/app.conf", Pos: Pos{21, 9}},
				},
			},
			{
				Name: "app",
				Pos:  Pos{25, 5},
				Charts: []Chart{
					{Name: "web", Source: "oci://registry.example.com/charts/web", Version: "2.0.0",
						Namespace: "web-ns", Release: "web-release", Values: "values/web.yaml", Pos: Pos{27, 9}},
					{Name: "local", Source: "charts/local", Pos: Pos{33, 9}},
				},
			},
			{
				Name: "node",
				Pos:  Pos{35, 5},
				AMIs: []AMI{
					{Name: "node-image", Source: "disk/node.raw", SHA256: strings.Repeat("1", 64), Description: "the node",
						Architecture: "arm64", BootMode: "uefi", Virtualization: "hvm", RootDevice: "/dev/nvme0n1",
						ENA: true, TPM: true, Pos: Pos{37, 9}},
					{Name: "minimal", Source: "disk/min.qcow2", Pos: Pos{47, 9}},
				},
			},
		},
		File: "zdt.yaml",
		Raw:  []byte(fullSpec),
	}
	if !reflect.DeepEqual(s, want) {
		t.Errorf("Parse mismatch\n got: %+v\nwant: %+v", s, want)
		// Narrow it down, one component at a time.
		for i := range min(len(s.Components), len(want.Components)) {
			if !reflect.DeepEqual(s.Components[i], want.Components[i]) {
				t.Errorf("components[%d]\n got: %+v\nwant: %+v", i, s.Components[i], want.Components[i])
			}
		}
	}
	if got := s.ItemCount(); got != 9 {
		t.Errorf("ItemCount = %d, want 9", got)
	}
	if s.Dir != "" {
		t.Errorf("Dir = %q, want empty from Parse", s.Dir)
	}
}

func TestParseOK(t *testing.T) {
	head := "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: x, version: v1}\n"
	tests := []struct {
		name  string
		body  string
		check func(t *testing.T, s *Spec)
	}{
		{
			name: "flow style and no platforms",
			body: "components: [{name: c, images: [nginx]}]\n",
			check: func(t *testing.T, s *Spec) {
				if s.Platforms != nil {
					t.Errorf("Platforms = %v, want nil", s.Platforms)
				}
				if got := s.Components[0].Images[0]; got.Ref != "nginx" || got.Source != "" {
					t.Errorf("image = %+v", got)
				}
			},
		},
		{
			name: "null lists are empty",
			body: "platforms:\ncomponents:\n  - name: c\n    images:\n    charts:\n    files: [{source: a, sha256: " + strings.Repeat("a", 64) + ", target: /a}]\n",
			check: func(t *testing.T, s *Spec) {
				if s.ItemCount() != 1 || s.Components[0].Files[0].ItemName() != "a" {
					t.Errorf("components = %+v", s.Components)
				}
			},
		},
		{
			name: "numbers and quoted strings stay as written",
			body: "components:\n  - name: c\n    files:\n      - {source: '010', sha256: " + strings.Repeat("b", 64) + ", target: /b, mode: 0755}\n",
			check: func(t *testing.T, s *Spec) {
				f := s.Components[0].Files[0]
				if f.Source != "010" || f.Mode != "0755" {
					t.Errorf("file = %+v, want source 010 and mode 0755 as written", f)
				}
			},
		},
		{
			name: "same image name in different spellings is allowed",
			body: "components:\n  - name: a\n    images: [nginx]\n  - name: b\n    images: ['docker.io/library/nginx:latest']\n",
			check: func(t *testing.T, s *Spec) {
				if s.ItemCount() != 2 {
					t.Errorf("ItemCount = %d, want 2", s.ItemCount())
				}
			},
		},
		{
			name: "trailing document marker",
			body: "components: [{name: c, images: [nginx]}]\n---\n",
			check: func(t *testing.T, s *Spec) {
				if s.ItemCount() != 1 {
					t.Errorf("ItemCount = %d, want 1", s.ItemCount())
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Parse("", []byte(head+tt.body))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			tt.check(t, s)
		})
	}
}

func TestFileItemName(t *testing.T) {
	tests := []struct {
		name string
		file File
		want string
	}{
		{"name wins", File{Name: "tool", Target: "/usr/bin/other"}, "tool"},
		{"base of target", File{Target: "/usr/local/bin/zdt-hello"}, "zdt-hello"},
		{"top-level target", File{Target: "/motd"}, "motd"},
		{"no slash", File{Target: "rel"}, "rel"},
		{"trailing slash", File{Target: "/etc/"}, ""},
		{"empty", File{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.file.ItemName(); got != tt.want {
				t.Errorf("ItemName() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	t.Run("example", func(t *testing.T) {
		path := filepath.Join("..", "examples", "quickstart", "zdt.yaml")
		s, err := Load(path)
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		abs, _ := filepath.Abs(filepath.Dir(path))
		if s.Dir != abs || s.File != path {
			t.Errorf("Dir, File = %q, %q; want %q, %q", s.Dir, s.File, abs, path)
		}
		if s.ItemCount() == 0 || len(s.Raw) == 0 {
			t.Errorf("ItemCount = %d, len(Raw) = %d", s.ItemCount(), len(s.Raw))
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load = %v, want a not-exist error", err)
		}
	})
	t.Run("too large", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "big.yaml")
		if err := os.WriteFile(path, make([]byte, maxDocBytes+1), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Errorf("Load = %v, want a size error", err)
		}
	})
}

func TestParsePlatform(t *testing.T) {
	tests := []struct {
		in                string
		os, arch, variant string
		wantErr           bool
	}{
		{in: "linux/amd64", os: "linux", arch: "amd64"},
		{in: "linux/arm64/v8", os: "linux", arch: "arm64", variant: "v8"},
		{in: "windows/amd64", os: "windows", arch: "amd64"},
		{in: "linux", wantErr: true},
		{in: "", wantErr: true},
		{in: "linux/", wantErr: true},
		{in: "/amd64", wantErr: true},
		{in: "linux/arm/v7/extra", wantErr: true},
		{in: "linux/arm64/", wantErr: true},
		{in: "linux/ amd64", wantErr: true},
		{in: "linux//amd64", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			os, arch, variant, err := ParsePlatform(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParsePlatform(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if os != tt.os || arch != tt.arch || variant != tt.variant {
				t.Errorf("ParsePlatform(%q) = %q, %q, %q; want %q, %q, %q", tt.in, os, arch, variant, tt.os, tt.arch, tt.variant)
			}
		})
	}
}

func TestSplitImageSource(t *testing.T) {
	tests := []struct {
		in              string
		kind, path, tag string
		wantErr         string
	}{
		{in: "oci:images/hello:1.0", kind: "oci", path: "images/hello", tag: "1.0"},
		{in: "oci:images/hello", kind: "oci", path: "images/hello"},
		{in: "oci:/abs/layout:v2", kind: "oci", path: "/abs/layout", tag: "v2"},
		{in: "oci-archive:hello.tar:latest", kind: "oci-archive", path: "hello.tar", tag: "latest"},
		{in: "oci-archive:hello.tar", kind: "oci-archive", path: "hello.tar"},
		{in: "docker-archive:images/tools.tar", kind: "docker-archive", path: "images/tools.tar"},
		{in: "docker-archive:a:b.tar", kind: "docker-archive", path: "a:b.tar"},
		{in: "oci:dir:", kind: "oci", path: "dir"},
		{in: "images/hello", wantErr: "is not TRANSPORT:PATH"},
		{in: "oci:", wantErr: "is not TRANSPORT:PATH"},
		{in: "", wantErr: "is not TRANSPORT:PATH"},
		{in: "docker:nginx", wantErr: `unknown transport "docker"`},
		{in: "dir:images/x", wantErr: `unknown transport "dir"`},
		{in: "oci::tag", wantErr: "has no path"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			kind, path, tag, err := SplitImageSource(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("SplitImageSource(%q) error = %v, want %q", tt.in, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("SplitImageSource(%q): %v", tt.in, err)
			}
			if kind != tt.kind || path != tt.path || tag != tt.tag {
				t.Errorf("SplitImageSource(%q) = %q, %q, %q; want %q, %q, %q", tt.in, kind, path, tag, tt.kind, tt.path, tt.tag)
			}
		})
	}
}

func TestParseMode(t *testing.T) {
	tests := []struct {
		in      string
		want    os.FileMode
		wantErr bool
	}{
		{in: "", want: 0o644},
		{in: "0755", want: 0o755},
		{in: "755", want: 0o755},
		{in: "0600", want: 0o600},
		{in: "4755", want: 0o4755},
		{in: "07777", want: 0o7777},
		{in: "0", want: 0},
		{in: "0888", wantErr: true},
		{in: "rwxr-xr-x", wantErr: true},
		{in: "0o755", wantErr: true},
		{in: "-755", wantErr: true},
		{in: "17777", wantErr: true},
		{in: " 755", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseMode(tt.in)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseMode(%q) error = %v, want error %v", tt.in, err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("ParseMode(%q) = %#o, want %#o", tt.in, got, tt.want)
			}
		})
	}
}

// TestModeRegexpAgreesWithParseMode: a mode the spec accepts must parse.
func TestModeRegexpAgreesWithParseMode(t *testing.T) {
	for _, m := range []string{"644", "0644", "755", "0755", "7777", "07777", "000", "0000"} {
		if !reMode.MatchString(m) {
			t.Errorf("spec rejects mode %q", m)
		}
		if _, err := ParseMode(m); err != nil {
			t.Errorf("spec accepts mode %q but ParseMode fails: %v", m, err)
		}
	}
}
