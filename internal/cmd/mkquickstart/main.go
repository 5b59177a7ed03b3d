// Command mkquickstart generates the inputs of examples/quickstart that are
// not checked in: the hello image (built from examples/quickstart/hello for
// linux/amd64 and linux/arm64) as an OCI layout, a tools image as a
// `docker save` tarball sharing the hello image's base layer, and a small
// sparse raw disk image for the AMI item. No downloads.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"zdt.dev/zdt/internal/fixtures"
)

func main() {
	dir := flag.String("dir", "examples/quickstart", "quickstart directory")
	flag.Parse()
	if err := generate(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "mkquickstart:", err)
		os.Exit(1)
	}
}

func generate(dir string) error {
	base, err := fixtures.Layer(map[string]fixtures.File{
		"etc/os-release": {Data: []byte("NAME=\"zdt quickstart base\"\nID=zdt\n")},
		"etc/passwd":     {Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")},
		"etc/group":      {Data: []byte("root:x:0:\nnobody:x:65534:\n")},
	})
	if err != nil {
		return err
	}
	var imgs []v1.Image
	for _, arch := range []string{"amd64", "arm64"} {
		bin := filepath.Join(os.TempDir(), "zdt-quickstart-hello-"+arch)
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./"+filepath.Join(dir, "hello"))
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
		cmd.Stderr = os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("building hello for %s: %w", arch, err)
		}
		data, err := os.ReadFile(bin)
		if err != nil {
			return err
		}
		app, err := fixtures.Layer(map[string]fixtures.File{"usr/local/bin/hello": {Data: data, Mode: 0o755}})
		if err != nil {
			return err
		}
		img, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: arch}, []string{"/usr/local/bin/hello"}, base, app)
		if err != nil {
			return err
		}
		imgs = append(imgs, img)
	}
	idx, err := fixtures.Index(imgs...)
	if err != nil {
		return err
	}
	imagesDir := filepath.Join(dir, "images")
	if err := os.RemoveAll(imagesDir); err != nil {
		return err
	}
	if err := fixtures.WriteLayoutIndex(filepath.Join(imagesDir, "hello"), "1.0", idx); err != nil {
		return err
	}
	script, err := os.ReadFile(filepath.Join(dir, "files", "zdt-hello.sh"))
	if err != nil {
		return err
	}
	tools, err := fixtures.Layer(map[string]fixtures.File{"usr/local/bin/zdt-hello": {Data: script, Mode: 0o755}})
	if err != nil {
		return err
	}
	toolsImg, err := fixtures.Image(v1.Platform{OS: "linux", Architecture: "amd64"}, []string{"/usr/local/bin/zdt-hello"}, base, tools)
	if err != nil {
		return err
	}
	if err := fixtures.WriteDockerArchive(filepath.Join(imagesDir, "tools.tar"), "zdt.example/quickstart/tools:1.0", toolsImg); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "disk"), 0o755); err != nil {
		return err
	}
	return fixtures.RawDisk(filepath.Join(dir, "disk", "node.raw"), 64<<20, 1)
}
