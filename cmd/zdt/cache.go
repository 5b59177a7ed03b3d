package main

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"zdt.dev/zdt/bundle/build"
)

func newCacheCmd(g *globals) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:   "cache",
		Short: "List and prune the blob cache of bundle create",
		Long: `List and prune the blob cache of bundle create.

bundle create keeps what it fetches in a cache shared by every create on the
machine ($XDG_CACHE_HOME/zdt, ~/.cache/zdt, or --cache-dir), so a second
create fetches only what changed, and an interrupted one resumes the blob it
was in the middle of (partials). Nothing in the cache is trusted: create
hashes every byte it takes from it.`,
	})
	cmd.AddCommand(newCacheLsCmd(g), newCachePruneCmd(g))
	return cmd
}

// cacheDirOptions is the --cache-dir flag of the cache commands, the same
// as bundle create's.
type cacheDirOptions struct{ dir string }

func (o *cacheDirOptions) AddFlags(fs *pflag.FlagSet) {
	fs.StringVar(&o.dir, "cache-dir", "", "the blob cache of bundle create (default $XDG_CACHE_HOME/zdt, ~/.cache/zdt)")
}

func (o *cacheDirOptions) path() (string, error) {
	if o.dir != "" {
		return o.dir, nil
	}
	return build.DefaultCacheDir()
}

func newCacheLsCmd(g *globals) *cobra.Command {
	o := &cacheDirOptions{}
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List the cache's entries, most recently used first, with totals",
		Long: `List the cache's entries, most recently used first, with totals.

Each entry is a manifest (an image manifest or index), a blob (a layer,
config, file, chart or disk image) or a partial (the start of a blob an
interrupted fetch left, which the next create resumes). Its last use is when
a create last wrote it into an archive (a partial: last added to). Reads
only; safe while creates run. A cache that does not exist is empty.`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			dir, err := o.path()
			if err != nil {
				return err
			}
			l, err := build.ListCache(cmd.Context(), dir)
			if err != nil {
				return err
			}
			if g.json() {
				if l.Entries == nil {
					l.Entries = []build.CacheEntry{}
				}
				return g.printJSON(cacheLsOutput{Dir: dir, Entries: l.Entries, Totals: l.Totals})
			}
			tw := tabwriter.NewWriter(g.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "KIND\tDIGEST\tSIZE\tLAST USED")
			for _, e := range l.Entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Kind, e.Digest, humanBytes(e.Size), e.LastUsed.Local().Format(time.DateTime))
			}
			tw.Flush()
			fmt.Fprintf(g.stdout, "\n%s: %s in %s\n", dir, humanBytes(l.Totals.Size), cacheCounts(l.Totals))
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// cacheCounts says "3 manifests, 7 blobs, 1 partial".
func cacheCounts(t build.CacheTotals) string {
	return count(t.Manifests, "manifest") + ", " + count(t.Blobs, "blob") + ", " + count(t.Partials, "partial")
}

// cachePruneOptions are the flags of `zdt cache prune`.
type cachePruneOptions struct {
	cacheDirOptions
	maxSize string
	all     bool
}

func (o *cachePruneOptions) AddFlags(fs *pflag.FlagSet) {
	o.cacheDirOptions.AddFlags(fs)
	fs.StringVar(&o.maxSize, "max-size", "", "evict the least recently used entries until the cache holds at most SIZE (bytes, or with a unit: 500MB, 20GiB, 1T)")
	fs.BoolVar(&o.all, "all", false, "empty the cache")
}

func newCachePruneCmd(g *globals) *cobra.Command {
	o := &cachePruneOptions{}
	cmd := &cobra.Command{
		Use:   "prune (--max-size SIZE | --all)",
		Short: "Evict cache entries, least recently used first",
		Long: `Evict cache entries, least recently used first.

--max-size SIZE removes the least recently used entries (partials included)
until the cache holds at most SIZE; a blob goes together with the manifests
that point at it, so what is left of an image is still whole or fetched
again whole. --all empties the cache. Temp files of creates that are no
longer running go too.

A running create holds the cache's lock: prune then fails (exit 1) and
removes nothing; run it again once the create has finished. A create that
starts while prune runs waits for it.`,
		Example: `  zdt cache prune --max-size 20GiB
  zdt cache prune --all --cache-dir /var/cache/zdt`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var opts build.PruneOptions
			switch {
			case o.all && o.maxSize != "":
				return usageError{errors.New("--max-size and --all exclude each other")}
			case o.all:
				opts.All = true
			case o.maxSize != "":
				n, err := parseSize(o.maxSize)
				if err != nil {
					return usageError{fmt.Errorf("--max-size: %w", err)}
				}
				opts.MaxSize = n
			default:
				return usageError{errors.New("say how much to prune: --max-size SIZE or --all")}
			}
			dir, err := o.path()
			if err != nil {
				return err
			}
			opts.Logger = g.logger()
			res, err := build.PruneCache(cmd.Context(), dir, opts)
			if errors.Is(err, build.ErrCacheBusy) {
				return fmt.Errorf("%w; nothing was removed: run it again once the create has finished", err)
			}
			if err != nil {
				return err
			}
			if g.json() {
				if res.Removed == nil {
					res.Removed = []build.CacheEntry{}
				}
				return g.printJSON(cachePruneOutput{Dir: dir, Kept: res.Kept, Removed: res.Removed, RemovedSize: res.RemovedSize})
			}
			entries := fmt.Sprintf("%d entries", len(res.Removed))
			if len(res.Removed) == 1 {
				entries = "1 entry"
			}
			fmt.Fprintf(g.stdout, "removed %s (%s); %s: %s left in %s\n",
				entries, humanBytes(res.RemovedSize), dir, humanBytes(res.Kept.Size), cacheCounts(res.Kept))
			return nil
		},
	}
	o.AddFlags(cmd.Flags())
	return cmd
}

// parseSize reads a size: bytes, or a number with a unit (B; KB, MB, GB,
// TB in powers of 1000; K, M, G, T and KiB, MiB, GiB, TiB in powers of
// 1024), case-insensitive.
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	num, unit := t, ""
	if i >= 0 {
		num, unit = t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || num == "" || f < 0 {
		return 0, fmt.Errorf("%q is not a size (bytes, or a number with B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s)
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
		"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
		"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
	}
	m, ok := mult[unit]
	if !ok {
		return 0, fmt.Errorf("%q: unknown unit %q (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)", s, unit)
	}
	if f*m >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return int64(f * m), nil
}
