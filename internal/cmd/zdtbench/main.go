package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"gopkg.in/yaml.v3"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if len(os.Args) > 1 && os.Args[1] == "pull" {
		err = pullMain(ctx, os.Args[2:])
	} else {
		err = benchMain(ctx, os.Args[1:])
	}
	stopAll()
	if err != nil {
		fmt.Fprintln(os.Stderr, "zdtbench:", err)
		os.Exit(1)
	}
}

type options struct {
	size, zdt, work, out, rows, readme string
	runs                               int
	keep                               bool
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

func benchMain(ctx context.Context, args []string) error {
	var o options
	if err := o.parse(args); err != nil {
		return err
	}
	w, err := workloadFor(o.size)
	if err != nil {
		return err
	}
	rowFilter, err := regexp.Compile(o.rows)
	if err != nil {
		return fmt.Errorf("-rows: %w", err)
	}
	zdt, err := filepath.Abs(o.zdt)
	if err != nil {
		return err
	}
	if _, err := os.Stat(zdt); err != nil {
		return fmt.Errorf("%s: %w (run `make build` first)", o.zdt, err)
	}
	work, err := filepath.Abs(o.work)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	started := time.Now()

	ds, err := loadOrGenerate(ctx, w, work, log)
	if err != nil {
		return err
	}
	runDir := filepath.Join(work, "run")
	logDir, err := prepareRunDir(runDir)
	if err != nil {
		return err
	}
	src, err := startRegistry(ctx, ds.RegistryDir(), filepath.Join(logDir, "source-registry.log"))
	if err != nil {
		return fmt.Errorf("starting the source registry: %w", err)
	}
	defer src.Stop()
	// A run interrupted in the create-cached row leaves a changed app-00.
	if err := pushManifest(ctx, src.Addr, ds.Images[0]); err != nil {
		return err
	}
	b := &bench{
		runner: &runner{zdt: zdt, runs: o.runs, progress: os.Stderr, logDir: logDir, probes: map[string]string{}, byName: map[string]*RowResult{}},
		ds:     ds, src: src, work: runDir, self: self,
	}
	if b.specs, err = writeSpecs(ds, src.Addr, filepath.Join(runDir, "specs")); err != nil {
		return err
	}
	if _, err := exec.LookPath("regctl"); err == nil {
		if _, err := b.execProc(ctx, []string{"REGCTL_CONFIG=" + filepath.Join(runDir, "regctl.json")}, "regctl", "registry", "set", "--tls", "disabled", src.Addr); err != nil {
			return err
		}
	}

	res := newResults(ctx, started, w, o.runs, zdt, ds)
	write := func() error {
		res.Rows = b.results
		res.Seconds = time.Since(started).Seconds()
		res.Machine.LoadEnd = loadAvg()
		for _, r := range res.Rows {
			judge(r, b.byName)
		}
		if err := writeJSON(filepath.Join(o.out, "results.json"), res); err != nil {
			return err
		}
		return writeFileAtomic(filepath.Join(o.out, "results.md"), []byte(markdown(res)))
	}
	for _, row := range append(append(b.rows(ctx), b.deployRows(ctx)...), b.amiRegisterRow()) {
		if !rowFilter.MatchString(row.Name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		b.runRow(ctx, row)
		if err := write(); err != nil {
			return err
		}
	}
	if !o.keep { // the logs and specs stay for reading; the GBs go
		for _, d := range []string{"out", "cache", "cache-cold", "tmp"} {
			_ = os.RemoveAll(filepath.Join(runDir, d))
		}
	}
	if err := write(); err != nil {
		return err
	}
	if err := printSummary(o, res, w, started, logDir); err != nil {
		return err
	}
	return ctx.Err()
}

// parse reads zdtbench's flags (defaults from the BENCH_* environment).
func (o *options) parse(args []string) error {
	fs := flag.NewFlagSet("zdtbench", flag.ContinueOnError)
	fs.StringVar(&o.size, "size", envOr("BENCH_SIZE", "default"), "workload: small, default (≈2 GiB) or a size like 512M, 8G (env BENCH_SIZE)")
	runs, _ := strconv.Atoi(envOr("BENCH_RUNS", "3"))
	fs.IntVar(&o.runs, "runs", runs, "runs of every command, interleaved (env BENCH_RUNS)")
	fs.StringVar(&o.zdt, "zdt", "bin/zdt", "the zdt binary to measure")
	fs.StringVar(&o.work, "work", "bench/work", "work dir: cached datasets and this run's outputs")
	fs.StringVar(&o.out, "out", "bench", "where results.md and results.json go")
	fs.StringVar(&o.rows, "rows", os.Getenv("BENCH_ROWS"), "run only rows whose name matches this regexp (env BENCH_ROWS)")
	fs.StringVar(&o.readme, "readme", "", "also replace the marked Performance block of this README")
	fs.BoolVar(&o.keep, "keep", false, "keep this run's outputs and caches under WORK/run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.runs < 1 {
		return errors.New("-runs must be at least 1")
	}
	return nil
}

// prepareRunDir empties runDir and makes its logs, out, tmp and specs
// directories; it returns the logs directory.
func prepareRunDir(runDir string) (string, error) {
	if err := os.RemoveAll(runDir); err != nil {
		return "", err
	}
	logDir := filepath.Join(runDir, "logs")
	for _, d := range []string{logDir, filepath.Join(runDir, "out"), filepath.Join(runDir, "tmp"), filepath.Join(runDir, "specs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", err
		}
	}
	return logDir, nil
}

// newResults is the header of a run's results: machine, content, legend.
func newResults(ctx context.Context, started time.Time, w Workload, runs int, zdt string, ds *Dataset) *Results {
	return &Results{
		Started: started, Size: w.Name, Runs: runs, Workload: w,
		Machine: machineInfo(ctx, zdt),
		Content: contentSummary(ds),
		Legend: [][2]string{
			{"zdt", "bin/zdt, built by `make bench` from this tree"},
			{"$SRC", "127.0.0.1:PORT, the source registry: distribution `registry serve` over $DATA/registry"},
			{"$DST", "127.0.0.1:PORT, a fresh distribution `registry serve` started (untimed) before each run"},
			{"$DATA", "bench/work/data-" + w.key() + ", the generated release (cached between runs)"},
			{"$WORK", "bench/work/run, this run's outputs"},
			{"zdt serve repositories", "zdt serves an image of $SRC under its mirror namespace: $SRC/bench/app-00 is pulled as 127.0.0.1_PORT/bench/app-00 (containerd's override_path mirror setup); distribution serves it as bench/app-00"},
			{"zdtbench pull", "the serve rows' client (internal/cmd/zdtbench/pull.go): per client, every manifest then every distinct blob, 3 at a time, over plain HTTP; bytes counted and discarded"},
		},
	}
}

// printSummary prints the run's summary table and, with -readme, rewrites
// the README's Performance block.
func printSummary(o options, res *Results, w Workload, started time.Time, logDir string) error {
	fmt.Printf("\nzdt benchmarks, BENCH_SIZE=%s, %d runs each, %s in all; %s\n\n", w.Name, o.runs, time.Since(started).Round(time.Second), res.Machine)
	fmt.Print(summaryTable(res))
	fmt.Printf("\nDetails: %s/results.md, %s/results.json; logs: %s\n", o.out, o.out, logDir)
	if o.readme != "" {
		if err := updateReadme(o.readme, res); err != nil {
			return err
		}
		fmt.Printf("Updated the Performance section of %s\n", o.readme)
	}
	return nil
}

func contentSummary(ds *Dataset) string {
	w := ds.Workload
	return fmt.Sprintf("%d images (%s of distinct blobs: %d base layers of %s, each shared by %d images, plus %d unique layers of ~%s per image), "+
		"%d Helm charts, %d binaries of %s (about 2:1 compressible), a %s sparse raw disk image; the memory rows use one %s file. "+
		"Generated deterministically (seeded ChaCha8) in %.0f s and cached",
		len(ds.Images), humanBytes(ds.ImageBytes(nil)), w.Bases, humanBytes(w.BaseSize), (w.Images+w.Bases-1)/max(w.Bases, 1),
		w.AppLayers, humanBytes(w.AppLayerSize), w.Charts, len(ds.Files), humanBytes(w.FileSize), humanBytes(w.DiskSize),
		humanBytes(w.BigFileSize), ds.Seconds)
}

// writeSpecs writes the zdt.yaml files the rows build and the image lists
// the pull client reads; it returns their paths by name.
func writeSpecs(ds *Dataset, src, dir string) (map[string]string, error) {
	type image = string
	type chart struct {
		Name      string `yaml:"name"`
		Source    string `yaml:"source"`
		Version   string `yaml:"version"`
		Namespace string `yaml:"namespace"`
	}
	type file struct {
		Source string `yaml:"source"`
		SHA256 string `yaml:"sha256"`
		Target string `yaml:"target"`
		Mode   string `yaml:"mode"`
	}
	type ami struct {
		Name         string `yaml:"name"`
		Source       string `yaml:"source"`
		Architecture string `yaml:"architecture"`
		BootMode     string `yaml:"bootMode"`
	}
	type component struct {
		Name   string  `yaml:"name"`
		Images []image `yaml:"images,omitempty"`
		Charts []chart `yaml:"charts,omitempty"`
		Files  []file  `yaml:"files,omitempty"`
		AMIs   []ami   `yaml:"amis,omitempty"`
	}
	spec := func(name string, comps ...component) map[string]any {
		return map[string]any{
			"apiVersion": "zdt.dev/v1alpha1", "kind": "Bundle",
			"metadata":   map[string]string{"name": name, "version": "1.0.0"},
			"components": comps,
		}
	}
	var images []image
	for _, im := range ds.Images {
		images = append(images, src+"/"+im.Repo+":"+im.Tag)
	}
	var charts []chart
	for i := range ds.Workload.Charts {
		c, err := writeChart(filepath.Join(dir, "charts"), i, images[i%len(images)])
		if err != nil {
			return nil, err
		}
		charts = append(charts, chart{Name: c.Name, Source: c.Dir, Version: c.Version, Namespace: c.Name})
	}
	var files []file
	for _, f := range ds.Files {
		files = append(files, file{Source: f.Path, SHA256: f.SHA256, Target: "/usr/local/bin/" + f.Name, Mode: "0755"})
	}
	specs := map[string]any{
		"images": spec("bench-images", component{Name: "platform", Images: images}),
		"release": spec("bench-release",
			component{Name: "platform", Images: images},
			component{Name: "apps", Charts: charts},
			component{Name: "host", Files: files},
			component{Name: "node-image", AMIs: []ami{{Name: "bench-node", Source: ds.Disk.Path, Architecture: "x86_64", BootMode: "uefi"}}}),
		"bigfile": spec("bench-bigfile", component{Name: "host", Files: []file{{Source: ds.BigFile.Path, SHA256: ds.BigFile.SHA256, Target: "/opt/bench/big.bin", Mode: "0644"}}}),
		"tiny":    spec("bench-tiny", component{Name: "platform", Images: images[:1]}),
	}
	paths := map[string]string{}
	for name, s := range specs {
		b, err := yaml.Marshal(s)
		if err != nil {
			return nil, err
		}
		p := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return nil, err
		}
		paths[name] = p
	}
	list := func(name string, ims []ImageInfo) error {
		var sb strings.Builder
		for _, im := range ims {
			fmt.Fprintf(&sb, "%s@%s\n", im.Repo, im.Digest)
		}
		p := filepath.Join(dir, name+".txt")
		paths[name] = p
		return os.WriteFile(p, []byte(sb.String()), 0o644)
	}
	hot := ds.Images[:min(ds.Workload.HotImages, len(ds.Images))]
	if err := list("all", ds.Images); err != nil {
		return nil, err
	}
	if err := list("hot", hot); err != nil {
		return nil, err
	}
	return paths, nil
}
