package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// bench is one run: the dataset, the source registry, the work dir, the
// runner. Rows are built from it.
type bench struct {
	*runner
	ds    *Dataset
	src   *proc  // the source registry, up for the whole run
	work  string // bench/work/run (absolute)
	self  string // this executable, for `zdtbench pull`
	specs map[string]string
}

func (b *bench) out(name string) string { return filepath.Join(b.work, "out", name) }

// show renders argv as the report prints it: work paths and ports replaced
// by the variables the legend explains.
func (b *bench) show(argv ...string) string {
	var parts []string
	for _, a := range argv {
		a = strings.ReplaceAll(a, b.work, "$WORK")
		a = strings.ReplaceAll(a, b.ds.Dir, "$DATA")
		a = strings.ReplaceAll(a, b.src.Addr, "$SRC")
		if a == b.zdt {
			a = "zdt"
		}
		if strings.ContainsAny(a, " \t'\"") {
			a = "'" + a + "'"
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

// cmd is a command run as is, timed as one process.
func (b *bench) cmd(role Role, label string, argv ...string) *Cmd {
	return &Cmd{Role: role, Label: label, Display: b.show(argv...), Needs: []string{argv[0]},
		Run: func(ctx context.Context, _ int) (Sample, error) { return b.execProc(ctx, nil, argv...) }}
}

// perImage is a peer that runs one command per image, one after the other
// (as a script looping over the image list would), timed as one sample.
func (b *bench) perImage(label string, env []string, argv func(i int, im ImageInfo) []string) *Cmd {
	var argvs [][]string
	for i, im := range b.ds.Images {
		argvs = append(argvs, argv(i, im))
	}
	return &Cmd{Role: RolePeer, Label: label, Needs: []string{argvs[0][0]},
		Display: fmt.Sprintf("%s  (× %d images, one after the other)", b.show(argvs[0]...), len(argvs)),
		Run:     func(ctx context.Context, _ int) (Sample, error) { return b.execSeq(ctx, env, argvs) }}
}

// zdtCmd is a zdt command; clean is removed before each run.
func (b *bench) zdtCmd(clean string, args ...string) *Cmd {
	c := b.cmd(RoleZdt, "zdt", append([]string{b.zdt}, args...)...)
	c.Needs = nil
	if clean != "" {
		c.Before = func(context.Context, int) error { return os.RemoveAll(clean) }
	}
	return c
}

// create is `zdt bundle create` of spec into out. With cold (a first
// create), the fetch cache (when zdt has one) is a fresh empty dir each run,
// so nothing is reused from earlier runs and ~/.cache is left alone.
func (b *bench) create(ctx context.Context, spec, out string, cold bool) *Cmd {
	cache := filepath.Join(b.work, "cache-cold")
	args := []string{"bundle", "create", "-f", spec, "-o", out, "--lock-file", out + ".lock.yaml"}
	if !cold {
		cache = filepath.Join(b.work, "cache")
	}
	cacheFlag := b.optional(ctx, []string{"bundle", "create"}, "--cache-dir")
	if cacheFlag != nil {
		args = append(args, "--cache-dir", cache)
	}
	c := b.zdtCmd(out, args...)
	c.Before = func(context.Context, int) error {
		if cold {
			if err := os.RemoveAll(cache); err != nil {
				return err
			}
		}
		return os.RemoveAll(out)
	}
	return c
}

// hashFloor is `openssl dgst -sha256` over paths: every byte hashed once.
func (b *bench) hashFloor(what string, paths ...string) *Cmd {
	c := b.cmd(RoleFloor, "openssl", append([]string{"openssl", "dgst", "-sha256"}, paths...)...)
	if len(paths) > 1 {
		c.Display = "openssl dgst -sha256 " + what
	}
	return c
}

func (b *bench) blobPaths(images []ImageInfo) []string {
	var ps []string
	for _, bl := range b.ds.UniqueBlobs(images) {
		ps = append(ps, b.ds.BlobPath(bl.Digest))
	}
	return ps
}

// createPeers copy every image from the source registry into an OCI
// layout under dir; fresh removes the layouts before each run.
func (b *bench) createPeers(fresh bool) []*Cmd {
	ref := func(im ImageInfo) string { return b.src.Addr + "/" + im.Repo + ":" + im.Tag }
	var refs []string
	for _, im := range b.ds.Images {
		refs = append(refs, ref(im))
	}
	craneArgv := append(append([]string{"crane", "pull", "--insecure", "--format=oci"}, refs...), b.out("crane"))
	crane := b.cmd(RolePeer, "crane", craneArgv...)
	crane.Display = b.show(craneArgv[:5]...) + fmt.Sprintf(" … (all %d images in one call) ", len(refs)) + b.show(b.out("crane"))
	short := func(im ImageInfo) string { return strings.TrimPrefix(im.Repo, "bench/") }
	regctl := b.perImage("regctl", []string{"REGCTL_CONFIG=" + filepath.Join(b.work, "regctl.json")}, func(_ int, im ImageInfo) []string {
		return []string{"regctl", "image", "copy", ref(im), "ocidir://" + b.out("regctl") + ":" + short(im)}
	})
	skopeo := b.perImage("skopeo", nil, func(_ int, im ImageInfo) []string {
		return []string{"skopeo", "copy", "--insecure-policy", "--src-tls-verify=false", "--preserve-digests",
			"docker://" + ref(im), "oci:" + b.out("skopeo") + ":" + short(im)}
	})
	oras := b.perImage("oras", nil, func(_ int, im ImageInfo) []string {
		return []string{"oras", "cp", "--from-plain-http", "--to-oci-layout", ref(im), b.out("oras") + ":" + short(im)}
	})
	peers := []*Cmd{crane, regctl, skopeo, oras}
	if fresh {
		for _, p := range peers {
			dir := b.out(p.Label)
			p.Before = func(context.Context, int) error { return os.RemoveAll(dir) }
		}
	}
	return peers
}

// serverCmd times `zdtbench pull` (clients × the images of list) against
// a server that Before starts and After stops; the RSS reported is the
// server's peak (VmHWM).
// pullSpec is what the pull client of a serve row pulls.
type pullSpec struct {
	list    string // file of REPO@DIGEST
	clients int
	spread  bool // client k pulls image k mod n only
}

func (b *bench) serverCmd(role Role, label, display string, start func(ctx context.Context) (*proc, error), ps pullSpec) *Cmd {
	prefix := ""
	if role == RoleZdt {
		prefix = b.zdtPrefix()
	}
	var p *proc
	resFile := filepath.Join(b.work, "pull-result.json")
	return &Cmd{
		Role: role, Label: label, Display: display,
		Before: func(ctx context.Context, _ int) (err error) {
			p, err = start(ctx)
			return err
		},
		Run: func(ctx context.Context, _ int) (Sample, error) {
			s, err := b.execProc(ctx, nil, b.self, "pull", "-addr", p.Addr, "-list", ps.list, "-ns", b.src.Addr,
				"-prefix", prefix, "-clients", fmt.Sprint(ps.clients), fmt.Sprintf("-spread=%v", ps.spread), "-parallel", "3", "-out", resFile)
			s.RSS = p.HWM()
			if err != nil {
				return s, err
			}
			var pr PullResult
			raw, err := os.ReadFile(resFile)
			if err == nil {
				err = json.Unmarshal(raw, &pr)
			}
			if err != nil || pr.Bytes == 0 {
				return s, fmt.Errorf("pull result %s: %v (%d bytes)", resFile, err, pr.Bytes)
			}
			return s, nil
		},
		After: func(context.Context, int) error {
			if p != nil {
				return p.Stop()
			}
			return nil
		},
	}
}

// startCmd times a server from its start to the first answered pull of
// the first image's manifest.
func (b *bench) startCmd(role Role, label, display string, start func(ctx context.Context) (*proc, error)) *Cmd {
	return &Cmd{
		Role: role, Label: label, Display: display,
		Run: func(ctx context.Context, _ int) (Sample, error) {
			p, err := start(ctx)
			if err != nil {
				return Sample{}, err
			}
			defer p.Stop()
			prefix := ""
			if role == RoleZdt {
				prefix = b.zdtPrefix()
			}
			err = p.WaitHTTP(ctx, b.manifestURL(p.Addr, prefix), 2*time.Minute)
			return Sample{Wall: time.Since(p.Start), RSS: p.HWM()}, err
		},
	}
}

func (b *bench) manifestURL(addr, prefix string) string {
	im := b.ds.Images[0]
	return fmt.Sprintf("http://%s/v2/%s%s/manifests/%s?ns=%s", addr, prefix, im.Repo, im.Digest, b.src.Addr)
}

// zdtPrefix is the repository prefix under which zdt serves images of the
// source registry: its mirror namespace, the host with ':' made '_'
// (registry.MirrorNamespace), so 127.0.0.1:5000/bench/app-00 is served
// at 127.0.0.1_5000/bench/app-00.
func (b *bench) zdtPrefix() string { return strings.ReplaceAll(b.src.Addr, ":", "_") + "/" }

// optional returns flag when `zdt ARGS --help` lists it: contract flags
// that are still being built are passed as soon as they exist.
func (b *bench) optional(ctx context.Context, args []string, flag string) []string {
	if b.probe(ctx, Probe{Args: args, Flags: []string{flag}}) == "" {
		return []string{flag}
	}
	return nil
}

// zdtServe starts `zdt serve ARGS --insecure-http --addr FREE`; ready
// waits until the first image's manifest is served.
func (b *bench) zdtServe(ready bool, args ...string) func(ctx context.Context) (*proc, error) {
	return func(ctx context.Context) (*proc, error) {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		argv := append(append([]string{b.zdt, "serve"}, args...), "--insecure-http", "--addr", addr)
		if slices.Contains(args, "--bundle") { // the bench's archives are unsigned
			argv = append(argv, b.optional(ctx, []string{"serve"}, "--insecure-skip-signature")...)
		}
		p, err := startProc(ctx, addr, filepath.Join(b.logDir, "zdt-serve.log"), nil, argv...)
		if err != nil || !ready {
			return p, err
		}
		if err := p.WaitHTTP(ctx, b.manifestURL(addr, b.zdtPrefix()), 20*time.Second); err != nil {
			_ = p.Stop()
			return nil, err
		}
		return p, nil
	}
}

// registryOver starts `registry serve` over a storage dir (emptied first
// when fresh).
func (b *bench) registryOver(dir string, fresh bool) func(ctx context.Context) (*proc, error) {
	return func(ctx context.Context) (*proc, error) {
		if fresh {
			if err := os.RemoveAll(dir); err != nil {
				return nil, err
			}
		}
		return startRegistry(ctx, dir, filepath.Join(b.logDir, "registry.log"))
	}
}

// pushPeer runs push(dst) against a registry over dir that Before starts
// (fresh: emptied first) and After stops.
func (b *bench) pushPeer(label, display, dir string, fresh bool, push func(dst string) [][]string) *Cmd {
	var p *proc
	start := b.registryOver(dir, fresh)
	return &Cmd{
		Role: RolePeer, Label: label, Display: display, Needs: []string{label, "registry"},
		Before: func(ctx context.Context, _ int) (err error) {
			p, err = start(ctx)
			return err
		},
		Run: func(ctx context.Context, _ int) (Sample, error) { return b.execSeq(ctx, nil, push(p.Addr)) },
		After: func(context.Context, int) error {
			if p != nil {
				return p.Stop()
			}
			return nil
		},
	}
}

// rows are the benchmark, in the order they run. A row for a new feature
// is a Row literal: its probe, the zdt command, the peers, the floor, the
// goals.
func (b *bench) rows(ctx context.Context) []*Row {
	ds, w := b.ds, b.ds.Workload
	imagesBytes := ds.ImageBytes(nil)
	release, imagesZdt, big := b.out("release.zdt"), b.out("images.zdt"), b.out("big.zdt")
	root, layout := b.out("root"), b.out("layout")
	var hot []ImageInfo
	if w.HotImages < len(ds.Images) {
		hot = ds.Images[:w.HotImages]
	} else {
		hot = ds.Images
	}
	hotBytes := ds.ImageBytes(hot)
	var servedBytes int64 // by the 50 clients, client k pulling hot[k mod n]
	for k := range w.Clients {
		servedBytes += ds.ImageBytes(hot[k%len(hot) : k%len(hot)+1])
	}
	all := pullSpec{list: b.specs["all"], clients: 1}
	fifty := pullSpec{list: b.specs["hot"], clients: w.Clients, spread: true}
	installFlags := []string{"--bundle", "--root"}
	skipSig := b.optional(ctx, []string{"install"}, "--insecure-skip-signature")
	install := func(bundlePath, rootDir string) []string {
		return append([]string{"install", "--bundle", bundlePath, "--root", rootDir}, skipSig...)
	}
	// installInto is a first install of the release into a fresh rootDir.
	installInto := func(rootDir string, flags ...string) *Cmd {
		c := b.zdtCmd(rootDir, append(install(release, rootDir), flags...)...)
		c.Before = func(context.Context, int) error {
			if err := os.RemoveAll(rootDir); err != nil {
				return err
			}
			return os.MkdirAll(rootDir, 0o755)
		}
		return c
	}
	verify := func(archive string) []string {
		return append([]string{"bundle", "verify", archive}, b.optional(ctx, []string{"bundle", "verify"}, "--insecure-skip-signature")...)
	}
	regServe := "registry serve config.yml  (distribution, filesystem storage over the source registry's data)"

	cached := &Row{
		Name:     "create-cached",
		Title:    fmt.Sprintf("bundle create again after one of the %d images changed (%d new layers), with the fetch cache", len(ds.Images), w.AppLayers),
		Probes:   []Probe{{Args: []string{"bundle", "create"}, Flags: []string{"--cache-dir"}}},
		Requires: []string{"create-images"},
		Cmds:     append([]*Cmd{b.create(ctx, b.specs["images"], b.out("images-cached.zdt"), false)}, b.createPeers(false)...),
		Goals:    []Goal{vsRow("create-images", 0.1)},
		Note:     "Before every run (untimed) bench/app-00:1.0 is pushed again with new unique layers. The peers copy into the layouts the create-images row left behind, so they too only fetch what changed.",
	}
	cached.Setup = func(ctx context.Context) error {
		_, err := b.execProc(ctx, nil, b.zdt, "bundle", "create", "-f", b.specs["images"], "-o", b.out("images-cached.zdt"),
			"--lock-file", b.out("images-cached.zdt.lock.yaml"), "--cache-dir", filepath.Join(b.work, "cache"))
		return err
	}
	for i, c := range cached.Cmds {
		before := c.Before
		c.Before = func(ctx context.Context, run int) error {
			if _, err := pushImage(ctx, b.src.Addr, filepath.Join(b.work, "tmp"), w, ds.Bases, 0, 1+run*len(cached.Cmds)+i); err != nil {
				return err
			}
			if before != nil {
				return before(ctx, run)
			}
			return nil
		}
	}
	cached.Teardown = func(ctx context.Context) error {
		for _, p := range []string{"crane", "regctl", "skopeo", "oras", "images-cached.zdt"} {
			os.RemoveAll(b.out(p))
		}
		return pushManifest(ctx, b.src.Addr, ds.Images[0])
	}

	// create-delta: the same change as create-cached, written as a delta
	// bundle on the create-images archive (only what that archive lacks).
	delta := &Row{
		Name:     "create-delta",
		Title:    fmt.Sprintf("bundle create --base: the create-cached change (one of %d images with %d new layers) as a delta bundle on the create-images archive", len(ds.Images), w.AppLayers),
		Probes:   []Probe{{Args: []string{"bundle", "create"}, Flags: []string{"--cache-dir", "--base"}}},
		Requires: []string{"create-images"},
		Cmds: []*Cmd{func() *Cmd {
			out := b.out("images-delta.zdt")
			c := b.zdtCmd(out, "bundle", "create", "-f", b.specs["images"], "-o", out, "--lock-file", out+".lock.yaml",
				"--cache-dir", filepath.Join(b.work, "cache"), "--base", imagesZdt)
			c.Before = func(context.Context, int) error { return os.RemoveAll(out) }
			return c
		}()},
		Goals: []Goal{vsRow("create-images", 0.1)},
		Note: "Before every run (untimed) bench/app-00:1.0 is pushed again with new unique layers, as in create-cached. " +
			"The delta holds those layers and the new manifests only; installing it needs the create-images bundle installed (zdt install finds it there).",
	}
	for i, c := range delta.Cmds {
		c.Before = chainBefore(func(ctx context.Context, run int) error {
			_, err := pushImage(ctx, b.src.Addr, filepath.Join(b.work, "tmp"), w, ds.Bases, 0, 1000+run*len(delta.Cmds)+i)
			return err
		}, c.Before)
	}
	delta.Teardown = func(ctx context.Context) error {
		os.RemoveAll(b.out("images-delta.zdt"))
		return pushManifest(ctx, b.src.Addr, ds.Images[0])
	}

	return []*Row{
		{
			Name:  "create-images",
			Title: fmt.Sprintf("bundle create: %d images (%s, %d shared base layers) from a local distribution registry", len(ds.Images), humanBytes(imagesBytes), w.Bases),
			Bytes: imagesBytes,
			Cmds: append(append([]*Cmd{b.create(ctx, b.specs["images"], imagesZdt, true)},
				b.createPeers(true)...),
				b.hashFloor(fmt.Sprintf("$DATA/registry/…/blobs/sha256/*/*/data  (the images' %d distinct blobs)", len(ds.UniqueBlobs(nil))), b.blobPaths(nil)...)),
			Goals: []Goal{vsFastestPeer(0.5)},
			Note: "zdt writes one archive, with a fresh empty --cache-dir each run (a first create); each peer writes a fresh OCI layout directory. " +
				"crane takes every image in one call; regctl, skopeo and oras take one image per call.",
		},
		cached,
		delta,
		{
			Name: "create-release",
			Title: fmt.Sprintf("bundle create: the whole release (%d images, %d charts, %d binaries of %s, a %s sparse disk image)",
				len(ds.Images), w.Charts, len(ds.Files), humanBytes(w.FileSize), humanBytes(w.DiskSize)),
			Bytes: imagesBytes + ds.FileBytes() + w.DiskSize,
			Cmds: []*Cmd{
				b.create(ctx, b.specs["release"], release, true),
				b.hashFloor("$DATA/registry/…/data $DATA/files/* $DATA/disk/node.raw  (every input byte)",
					append(append(b.blobPaths(nil), filePaths(ds.Files)...), ds.Disk.Path)...),
			},
			Note: "No peer packs images, charts, files and disk images into one artifact; the floor hashes every input once.",
		},
		{
			Name:      "verify",
			Title:     "bundle verify of the release archive (structure + every blob's digest)",
			Requires:  []string{"create-release"},
			BytesFile: release,
			Cmds: []*Cmd{
				b.zdtCmd("", verify(release)...),
				b.hashFloor("", release),
			},
			Goals: []Goal{vsFloor(1.5)},
		},
		{
			Name:  "create-bigfile",
			Title: fmt.Sprintf("bundle create: one %s file (streaming: memory must not grow with it)", humanBytes(w.BigFileSize)),
			Bytes: w.BigFileSize,
			Cmds: []*Cmd{
				b.create(ctx, b.specs["bigfile"], big, true),
				b.hashFloor("", ds.BigFile.Path),
			},
			Goals: []Goal{rssUnder(200 * mib)},
		},
		{
			Name:      "verify-bigfile",
			Title:     fmt.Sprintf("bundle verify of the archive holding one %s file", humanBytes(w.BigFileSize)),
			Requires:  []string{"create-bigfile"},
			BytesFile: big,
			Cmds: []*Cmd{
				b.zdtCmd("", verify(big)...),
				b.hashFloor("", big),
			},
			Goals:    []Goal{rssUnder(200 * mib), vsFloor(1.5)},
			Teardown: func(context.Context) error { return os.RemoveAll(big) },
		},
		{
			Name:      "install",
			Title:     "first install of the release archive into an empty root",
			Probes:    []Probe{{Args: []string{"install"}, Flags: installFlags}},
			Requires:  []string{"create-release"},
			BytesFile: release,
			Setup: func(ctx context.Context) error {
				if err := os.MkdirAll(layout, 0o755); err != nil {
					return err
				}
				_, err := b.execProc(ctx, nil, "tar", "-xf", release, "-C", layout)
				return err
			},
			Cmds: []*Cmd{
				installInto(root),
				b.pushPeer("crane", "crane push --index $WORK/out/layout $DST/bench/release:1.0  (the layout extracted from the archive with tar, untimed; into a fresh distribution registry)",
					b.out("dst-crane"), true, func(dst string) [][]string {
						return [][]string{{"crane", "push", "--insecure", "--index", layout, dst + "/bench/release:1.0"}}
					}),
				b.pushPeer("skopeo", fmt.Sprintf("skopeo copy --insecure-policy --dest-tls-verify=false --preserve-digests oci:$WORK/out/layout:$SRC/bench/app-00:1.0 docker://$DST/bench/app-00:1.0  (× %d images, one after the other, into a fresh distribution registry; images only)", len(ds.Images)),
					b.out("dst-skopeo"), true, func(dst string) [][]string {
						var argvs [][]string
						for _, im := range ds.Images {
							argvs = append(argvs, []string{"skopeo", "copy", "--insecure-policy", "--dest-tls-verify=false", "--preserve-digests",
								"oci:" + layout + ":" + b.src.Addr + "/" + im.Repo + ":" + im.Tag, "docker://" + dst + "/" + im.Repo + ":" + im.Tag})
						}
						return argvs
					}),
				b.hashFloor("", release),
			},
			Goals:    []Goal{vsFloor(1.5), vsFastestPeer(0.5)},
			Teardown: func(context.Context) error { return os.RemoveAll(b.out("dst-skopeo")) },
			Note: "The archive and the root are on one filesystem, so install keeps the verified archive in the registry storage " +
				"(a hard link) and serves from it: it hashes every blob and writes only the files. Row install-copy is the other case.",
		},
		{
			Name:      "install-copy",
			Title:     "first install of the release archive with --copy-blobs (what happens when the bundle is on another filesystem, a DVD say)",
			Probes:    []Probe{{Args: []string{"install"}, Flags: append(installFlags, "--copy-blobs")}},
			Requires:  []string{"install"},
			BytesFile: release,
			Cmds: []*Cmd{
				installInto(b.out("root-copy"), "--copy-blobs"),
				b.pushPeer("crane", "crane push --index $WORK/out/layout $DST/bench/release:1.0  (as in row install)",
					b.out("dst-crane-copy"), true, func(dst string) [][]string {
						return [][]string{{"crane", "push", "--insecure", "--index", layout, dst + "/bench/release:1.0"}}
					}),
				b.hashFloor("", release),
			},
			Note: "Every blob is copied into the registry storage and made durable (one syncfs), files too; the peers' registry writes are not synced.",
			Teardown: func(context.Context) error {
				os.RemoveAll(b.out("root-copy"))
				return os.RemoveAll(b.out("dst-crane-copy"))
			},
		},
		{
			Name:     "reinstall",
			Title:    "install of the same archive again (nothing to change)",
			Probes:   []Probe{{Args: []string{"install"}, Flags: installFlags}},
			Requires: []string{"install"},
			Cmds: []*Cmd{
				b.zdtCmd("", install(release, root)...),
				b.pushPeer("crane", "crane push --index $WORK/out/layout $DST/bench/release:1.0  (into the registry the install row filled)",
					b.out("dst-crane"), false, func(dst string) [][]string {
						return [][]string{{"crane", "push", "--insecure", "--index", layout, dst + "/bench/release:1.0"}}
					}),
			},
			Goals:    []Goal{wallUnder(2)},
			Teardown: func(context.Context) error { os.RemoveAll(layout); return os.RemoveAll(b.out("dst-crane")) },
		},
		{
			Name:     "serve-root",
			Title:    fmt.Sprintf("pull of all %d images (%s) from the installed root: 1 client, 3 blobs at a time", len(ds.Images), humanBytes(imagesBytes)),
			Probes:   []Probe{{Args: []string{"serve"}, Flags: []string{"--root", "--insecure-http", "--addr"}}},
			Requires: []string{"install"},
			Setup:    installedRegistry(root),
			Bytes:    imagesBytes,
			Cmds: []*Cmd{
				b.serverCmd(RoleZdt, "zdt", "zdt serve --root $WORK/out/root --insecure-http --addr 127.0.0.1:PORT", b.zdtServe(true, "--root", root), all),
				b.serverCmd(RolePeer, "registry", regServe, b.registryOver(ds.RegistryDir(), false), all),
			},
			Goals: []Goal{throughputVsPeer(0.9)},
		},
		{
			Name:     "serve-bundle",
			Title:    fmt.Sprintf("pull of all %d images (%s) straight from the archive: 1 client, 3 blobs at a time", len(ds.Images), humanBytes(imagesBytes)),
			Probes:   []Probe{{Args: []string{"serve"}, Flags: []string{"--bundle", "--insecure-http", "--addr"}}},
			Requires: []string{"create-release"},
			Bytes:    imagesBytes,
			Cmds: []*Cmd{
				b.serverCmd(RoleZdt, "zdt", "zdt serve --bundle $WORK/out/release.zdt --insecure-http --addr 127.0.0.1:PORT", b.zdtServe(true, "--bundle", release), all),
				b.serverCmd(RolePeer, "registry", regServe, b.registryOver(ds.RegistryDir(), false), all),
			},
			Goals: []Goal{throughputVsPeer(0.9)},
		},
		{
			Name:     "serve-start-tiny",
			Title:    "zdt serve --bundle on a 1-image archive: time from start to the first answered pull",
			Probes:   []Probe{{Args: []string{"serve"}, Flags: []string{"--bundle", "--insecure-http", "--addr"}}},
			Requires: []string{"create-release"},
			Setup: func(ctx context.Context) error {
				c := b.create(ctx, b.specs["tiny"], b.out("tiny.zdt"), true)
				if err := c.Before(ctx, 0); err != nil {
					return err
				}
				_, err := c.Run(ctx, 0)
				return err
			},
			Cmds: []*Cmd{
				b.startCmd(RoleZdt, "zdt", "zdt serve --bundle $WORK/out/tiny.zdt --insecure-http --addr 127.0.0.1:PORT", b.zdtServe(false, "--bundle", b.out("tiny.zdt"))),
			},
			Goals: []Goal{wallUnder(1)},
		},
		{
			Name:     "serve-start",
			Title:    "zdt serve --bundle on the release archive: time from start to the first answered pull",
			Probes:   []Probe{{Args: []string{"serve"}, Flags: []string{"--bundle", "--insecure-http", "--addr"}}},
			Requires: []string{"create-release"},
			Cmds: []*Cmd{
				b.startCmd(RoleZdt, "zdt", "zdt serve --bundle $WORK/out/release.zdt --insecure-http --addr 127.0.0.1:PORT", b.zdtServe(false, "--bundle", release)),
				b.startCmd(RolePeer, "registry", regServe+"  (storage already filled: a copy-first server such as Hauler's store serve copies the content before this point)", b.registryOver(ds.RegistryDir(), false)),
			},
			Goals: []Goal{wallUnder(1), flatVsRow("serve-start-tiny", 2, 0.1)},
			Note:  "Hauler's `store serve` needs ~13 s for 537 MB on these machines because it copies its store first; zdt only indexes tar headers, so the time should not grow with the archive (compare serve-start-tiny).",
		},
		{
			Name:     "serve-50-root",
			Title:    fmt.Sprintf("%d concurrent clients pulling from a %d-image set (%s), client k the image k mod %d (%s served in all), from the installed root", w.Clients, len(hot), humanBytes(hotBytes), len(hot), humanBytes(servedBytes)),
			Probes:   []Probe{{Args: []string{"serve"}, Flags: []string{"--root", "--insecure-http", "--addr"}}},
			Requires: []string{"install"},
			Setup:    installedRegistry(root),
			Bytes:    servedBytes,
			Cmds: []*Cmd{
				b.serverCmd(RoleZdt, "zdt", "zdt serve --root $WORK/out/root --insecure-http --addr 127.0.0.1:PORT", b.zdtServe(true, "--root", root), fifty),
				b.serverCmd(RolePeer, "registry", regServe, b.registryOver(ds.RegistryDir(), false), fifty),
			},
			Goals: []Goal{throughputVsPeer(0.9)},
		},
		{
			Name:     "serve-50-bundle",
			Title:    fmt.Sprintf("%d concurrent clients pulling from a %d-image set (%s), client k the image k mod %d (%s served in all), straight from the archive", w.Clients, len(hot), humanBytes(hotBytes), len(hot), humanBytes(servedBytes)),
			Probes:   []Probe{{Args: []string{"serve"}, Flags: []string{"--bundle", "--insecure-http", "--addr"}}},
			Requires: []string{"create-release"},
			Bytes:    servedBytes,
			Cmds: []*Cmd{
				b.serverCmd(RoleZdt, "zdt", "zdt serve --bundle $WORK/out/release.zdt --insecure-http --addr 127.0.0.1:PORT", b.zdtServe(true, "--bundle", release), fifty),
				b.serverCmd(RolePeer, "registry", regServe, b.registryOver(ds.RegistryDir(), false), fifty),
			},
			Goals: []Goal{throughputVsPeer(0.9)},
		},
	}
}

// installedRegistry checks that the install row left registry storage
// for `zdt serve --root` to serve.
func installedRegistry(root string) func(context.Context) error {
	return func(context.Context) error {
		p := filepath.Join(root, "var", "lib", "zdt", "registry")
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("zdt install left no registry storage to serve: %w", err)
		}
		return nil
	}
}

func filePaths(fs []FileInfo) []string {
	var ps []string
	for _, f := range fs {
		ps = append(ps, f.Path)
	}
	return ps
}

// fileSize is the size of path now, 0 if it does not exist.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// chainBefore runs first, then next (when set), as one Before hook.
func chainBefore(first, next func(context.Context, int) error) func(context.Context, int) error {
	return func(ctx context.Context, run int) error {
		if err := first(ctx, run); err != nil {
			return err
		}
		if next != nil {
			return next(ctx, run)
		}
		return nil
	}
}
