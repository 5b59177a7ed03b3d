package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Role is what a command of a row stands for.
type Role string

// The roles, in the order a row's table lists them.
const (
	RoleZdt   Role = "zdt"
	RolePeer  Role = "peer"
	RoleFloor Role = "floor"
)

// Sample is one timed run of a command.
type Sample struct {
	Wall time.Duration
	RSS  int64 // peak resident set in bytes (0: unknown)
}

// Cmd is one measured command of a row. Only Run is timed.
type Cmd struct {
	Role    Role
	Label   string   // short name: zdt, crane, openssl …
	Display string   // the exact command, as the report shows it
	Needs   []string // programs it runs; missing ones make it n/a
	Before  func(ctx context.Context, run int) error
	Run     func(ctx context.Context, run int) (Sample, error)
	After   func(ctx context.Context, run int) error
}

// Probe is a zdt feature a row needs: `zdt ARGS --help` must succeed and
// mention every flag.
type Probe struct {
	Args  []string
	Flags []string
}

func (p Probe) String() string {
	s := "zdt " + strings.Join(p.Args, " ")
	if len(p.Flags) > 0 {
		s += " " + strings.Join(p.Flags, " ")
	}
	return s
}

// Row is one line of the results: zdt's command, its peers' and the floor,
// run interleaved.
type Row struct {
	Name  string // short id, e.g. create-images
	Title string // what is measured, with sizes
	Bytes int64  // content bytes one run moves (for throughput); 0: none shown
	// BytesFile, if set, is a file whose size (when the row starts) is Bytes:
	// an archive an earlier row wrote.
	BytesFile string
	Probes    []Probe
	Requires  []string // rows that must have succeeded first (their outputs are reused)
	Setup     func(ctx context.Context) error
	Teardown  func(ctx context.Context) error
	Cmds      []*Cmd
	Goals     []Goal
	Note      string
}

// RunResult is one run of a command in the results.
type RunResult struct {
	Seconds float64 `json:"seconds"`
	RSS     int64   `json:"rss"`
}

// CmdResult is a command's runs and statistics.
type CmdResult struct {
	Role    Role        `json:"role"`
	Label   string      `json:"label"`
	Command string      `json:"command"`
	Runs    []RunResult `json:"runs,omitempty"`
	Median  float64     `json:"median,omitempty"`
	Min     float64     `json:"min,omitempty"`
	Max     float64     `json:"max,omitempty"`
	PeakRSS int64       `json:"peakRSS,omitempty"`
	Error   string      `json:"error,omitempty"`
	NA      string      `json:"na,omitempty"`
}

func (c *CmdResult) ok() bool { return c != nil && c.Error == "" && c.NA == "" && len(c.Runs) > 0 }

// RowResult is a row in the results.
type RowResult struct {
	Name     string       `json:"name"`
	Title    string       `json:"title"`
	Status   string       `json:"status"` // ok, n/a, error
	Reason   string       `json:"reason,omitempty"`
	Bytes    int64        `json:"bytes,omitempty"`
	Commands []*CmdResult `json:"commands,omitempty"`
	Goals    []GoalResult `json:"goals,omitempty"`
	Note     string       `json:"note,omitempty"`
	Seconds  float64      `json:"seconds"`
	goals    []Goal
}

// zdt is the row's zdt command result, nil if it did not run.
func (r *RowResult) zdt() *CmdResult {
	for _, c := range r.Commands {
		if c.Role == RoleZdt && c.ok() {
			return c
		}
	}
	return nil
}

// fastestPeer is the peer with the lowest median, nil if none ran.
func (r *RowResult) fastestPeer() *CmdResult {
	var best *CmdResult
	for _, c := range r.Commands {
		if c.Role == RolePeer && c.ok() && (best == nil || c.Median < best.Median) {
			best = c
		}
	}
	return best
}

func (r *RowResult) floor() *CmdResult {
	for _, c := range r.Commands {
		if c.Role == RoleFloor && c.ok() {
			return c
		}
	}
	return nil
}

// runner runs rows and keeps their results.
type runner struct {
	zdt      string
	runs     int
	progress io.Writer
	log      *os.File // the current row's log
	logDir   string
	probes   map[string]string // probe → "" (available) or why not
	results  []*RowResult
	byName   map[string]*RowResult
}

// probe reports why p is not available ("" when it is).
func (r *runner) probe(ctx context.Context, p Probe) string {
	key := p.String()
	if why, ok := r.probes[key]; ok {
		return why
	}
	out, err := exec.CommandContext(ctx, r.zdt, append(slices.Clone(p.Args), "--help")...).CombinedOutput()
	why := ""
	if err != nil {
		why = fmt.Sprintf("zdt %s not available", strings.Join(p.Args, " "))
	} else {
		var missing []string
		for _, f := range p.Flags {
			if !strings.Contains(string(out), f) {
				missing = append(missing, f)
			}
		}
		if len(missing) > 0 {
			why = fmt.Sprintf("zdt %s has no %s yet", strings.Join(p.Args, " "), strings.Join(missing, ", "))
		}
	}
	r.probes[key] = why
	return why
}

// runRow runs row: probes, requirements, setup, then Runs rounds of every
// command in turn (A B C A B C …), then teardown.
func (r *runner) runRow(ctx context.Context, row *Row) *RowResult {
	start := time.Now()
	if row.BytesFile != "" {
		row.Bytes = fileSize(row.BytesFile)
	}
	res := &RowResult{Name: row.Name, Title: row.Title, Bytes: row.Bytes, Note: row.Note, goals: row.Goals}
	r.results = append(r.results, res)
	r.byName[row.Name] = res
	defer func() { res.Seconds = time.Since(start).Seconds() }()
	for _, c := range row.Cmds {
		res.Commands = append(res.Commands, &CmdResult{Role: c.Role, Label: c.Label, Command: c.Display})
	}
	na := func(why string) *RowResult {
		res.Status, res.Reason = "n/a", why
		fmt.Fprintf(r.progress, "%-22s n/a: %s\n", row.Name, why)
		return res
	}
	for _, p := range row.Probes {
		if why := r.probe(ctx, p); why != "" {
			return na(why)
		}
	}
	for _, req := range row.Requires {
		if o := r.byName[req]; o == nil || o.Status != "ok" {
			return na(fmt.Sprintf("needs row %s, which did not run", req))
		}
	}
	logf, err := os.Create(fmt.Sprintf("%s/%s.log", r.logDir, row.Name))
	if err != nil {
		res.Status, res.Reason = "error", err.Error()
		return res
	}
	defer logf.Close()
	r.log = logf
	fmt.Fprintf(r.progress, "%-22s %s\n", row.Name, row.Title)
	if row.Setup != nil {
		if err := row.Setup(ctx); err != nil {
			res.Status, res.Reason = "error", "setup: "+err.Error()
			fmt.Fprintf(r.progress, "%-22s error: %s\n", row.Name, res.Reason)
			return res
		}
	}
	for i, c := range row.Cmds {
		for _, n := range c.Needs {
			if _, err := exec.LookPath(n); err != nil {
				res.Commands[i].NA = n + " not installed"
			}
		}
	}
	for run := 0; run < r.runs && ctx.Err() == nil; run++ {
		for i, c := range row.Cmds {
			cr := res.Commands[i]
			if cr.Error != "" || cr.NA != "" {
				continue
			}
			s, err := r.runOne(ctx, c, run)
			if err != nil {
				cr.Error = err.Error()
				fmt.Fprintf(r.progress, "  run %d/%d %-8s error: %s\n", run+1, r.runs, c.Label, firstLine(cr.Error))
				continue
			}
			cr.Runs = append(cr.Runs, RunResult{Seconds: s.Wall.Seconds(), RSS: s.RSS})
			fmt.Fprintf(r.progress, "  run %d/%d %-8s %8.2f s %10s\n", run+1, r.runs, c.Label, s.Wall.Seconds(), humanBytes(s.RSS))
		}
	}
	if row.Teardown != nil {
		if err := row.Teardown(ctx); err != nil {
			fmt.Fprintf(r.progress, "  teardown: %v\n", err)
		}
	}
	for _, cr := range res.Commands {
		cr.stats()
	}
	res.Status = "ok"
	if z := res.zdt(); z == nil {
		res.Status = "error"
		for _, cr := range res.Commands {
			if cr.Role == RoleZdt && cr.Error != "" {
				res.Reason = cr.Error
			}
		}
		if err := ctx.Err(); err != nil && res.Reason == "" {
			res.Reason = err.Error()
		}
	}
	return res
}

func (r *runner) runOne(ctx context.Context, c *Cmd, run int) (Sample, error) {
	if c.Before != nil {
		if err := c.Before(ctx, run); err != nil {
			return Sample{}, fmt.Errorf("before: %w", err)
		}
	}
	s, err := c.Run(ctx, run)
	if c.After != nil {
		if aerr := c.After(ctx, run); aerr != nil && err == nil {
			err = fmt.Errorf("after: %w", aerr)
		}
	}
	return s, err
}

// stats fills in median, min, max and peak RSS.
func (c *CmdResult) stats() {
	if len(c.Runs) == 0 {
		return
	}
	var secs []float64
	for _, r := range c.Runs {
		secs = append(secs, r.Seconds)
		c.PeakRSS = max(c.PeakRSS, r.RSS)
	}
	c.Median = median(secs)
	c.Min, c.Max = slices.Min(secs), slices.Max(secs)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// tailBuffer keeps the last n bytes written to it.
type tailBuffer struct {
	n   int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.n {
		t.buf = t.buf[len(t.buf)-t.n:]
	}
	return len(p), nil
}

// execProc runs argv to completion, its output going to the row's log,
// and measures its wall time and peak RSS (wait4 rusage: the largest of the
// process and the children it waited for).
func (r *runner) execProc(ctx context.Context, env []string, argv ...string) (Sample, error) {
	tail := &tailBuffer{n: 1500}
	var w io.Writer = tail
	if r.log != nil {
		fmt.Fprintf(r.log, "\n$ %s\n", strings.Join(argv, " "))
		w = io.MultiWriter(r.log, tail)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = w, w
	if len(env) > 0 {
		cmd.Env = append(os.Environ(), env...)
	}
	start := time.Now()
	err := cmd.Run()
	s := Sample{Wall: time.Since(start)}
	if cmd.ProcessState != nil {
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			s.RSS = ru.Maxrss * 1024
		}
	}
	if err != nil {
		return s, fmt.Errorf("%s: %w: %s", argv[0], err, strings.TrimSpace(string(tail.buf)))
	}
	return s, nil
}

// execSeq runs several commands one after the other as one sample: the
// wall times add up, the peak RSS is the largest.
func (r *runner) execSeq(ctx context.Context, env []string, argvs [][]string) (Sample, error) {
	var total Sample
	for _, argv := range argvs {
		s, err := r.execProc(ctx, env, argv...)
		total.Wall += s.Wall
		total.RSS = max(total.RSS, s.RSS)
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

func humanBytes(n int64) string {
	switch {
	case n <= 0:
		return "—"
	case n >= gib:
		return fmt.Sprintf("%.2f GiB", float64(n)/float64(gib))
	case n >= mib:
		return fmt.Sprintf("%.0f MiB", float64(n)/float64(mib))
	case n >= kib:
		return fmt.Sprintf("%.0f KiB", float64(n)/float64(kib))
	}
	return fmt.Sprintf("%d B", n)
}
