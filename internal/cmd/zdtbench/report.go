package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"
)

// Machine describes where the run happened.
type Machine struct {
	CPU    string `json:"cpu"`
	CPUs   int    `json:"cpus"`
	Memory string `json:"memory"`
	OS     string `json:"os"`
	Kernel string `json:"kernel"`
	Go     string `json:"go"`
	// Load is /proc/loadavg's 1-minute average when the run started and
	// when it ended: other work on the machine shows up here.
	LoadStart string            `json:"loadStart"`
	LoadEnd   string            `json:"loadEnd,omitempty"`
	Tools     map[string]string `json:"tools"`
}

// Results is bench/results.json.
type Results struct {
	Started  time.Time    `json:"started"`
	Seconds  float64      `json:"seconds"`
	Size     string       `json:"size"`
	Runs     int          `json:"runs"`
	Machine  Machine      `json:"machine"`
	Workload Workload     `json:"workload"`
	Content  string       `json:"content"`
	Legend   [][2]string  `json:"legend"`
	Rows     []*RowResult `json:"rows"`
}

func machineInfo(ctx context.Context, zdt string) Machine {
	m := Machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Tools: map[string]string{}}
	m.CPU = procField("/proc/cpuinfo", "model name")
	m.LoadStart = loadAvg()
	if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
		var n int64
		fmt.Sscanf(kb, "%d", &n)
		m.Memory = humanBytes(n * kib)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if v := procField("/etc/os-release", "PRETTY_NAME"); v != "" {
		m.OS = strings.Trim(v, `"`)
	}
	version := func(name string, argv ...string) {
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			return
		}
		s := strings.TrimSpace(string(out))
		s, _, _ = strings.Cut(s, "\n")
		s, _, _ = strings.Cut(s, " (")
		s = strings.Join(strings.Fields(strings.TrimPrefix(strings.TrimPrefix(s, "Version:"), name+" ")), " ")
		s = strings.TrimPrefix(s, "version ")
		if f := strings.Fields(s); name == "registry" && len(f) > 0 {
			s = f[len(f)-1]
		}
		m.Tools[name] = s
	}
	version("zdt", zdt, "version")
	version("crane", "crane", "version")
	version("regctl", "regctl", "version", "--format", "{{.VCSTag}}")
	version("skopeo", "skopeo", "--version")
	version("oras", "oras", "version")
	version("registry", "registry", "--version")
	version("openssl", "openssl", "version")
	return m
}

// loadAvg is the 1-minute load average.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// procField reads "key: value" or "key=value" from a /proc or /etc file.
func procField(path, key string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		for _, sep := range []string{":", "="} {
			if k, v, ok := strings.Cut(line, sep); ok && strings.TrimSpace(k) == key {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

func (m Machine) String() string {
	s := fmt.Sprintf("%s, %d CPUs, %s RAM, %s (Linux %s), %s", m.CPU, m.CPUs, m.Memory, m.OS, m.Kernel, m.Go)
	return s
}

func (m Machine) toolList() string {
	var parts []string
	for _, t := range []string{"zdt", "crane", "regctl", "skopeo", "oras", "registry", "openssl"} {
		if v, ok := m.Tools[t]; ok {
			parts = append(parts, fmt.Sprintf("%s `%s`", t, v))
		}
	}
	return strings.Join(parts, ", ")
}

func writeJSON(path string, res *Results) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'))
}

func secs(s float64) string {
	switch {
	case s == 0:
		return "—"
	case s < 10:
		return fmt.Sprintf("%.2f s", s)
	}
	return fmt.Sprintf("%.1f s", s)
}

func rate(bytes int64, s float64) string {
	if bytes <= 0 || s <= 0 {
		return "—"
	}
	return humanBytes(int64(float64(bytes)/s)) + "/s"
}

func goalSummary(r *RowResult) (string, string) {
	if len(r.Goals) == 0 {
		return "—", "—"
	}
	var goals, results []string
	for _, g := range r.Goals {
		goals = append(goals, g.Goal)
		s := g.Result
		switch g.Result {
		case "met":
			s = "met"
		case "missed":
			s = "**missed**"
		}
		if g.Detail != "" {
			s += " (" + g.Detail + ")"
		}
		results = append(results, s)
	}
	return strings.Join(goals, "; "), strings.Join(results, "; ")
}

// summaryTable is the one-line-per-row table (README and results.md).
func summaryTable(res *Results) string {
	var b strings.Builder
	b.WriteString("| row | zdt (median) | zdt peak RSS | fastest peer (median) | zdt ÷ peer | zdt ÷ floor | goal | result |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|\n")
	for _, r := range res.Rows {
		goal, result := goalSummary(r)
		if r.Status != "ok" {
			fmt.Fprintf(&b, "| %s | %s: %s | | | | | %s | %s |\n", r.Name, r.Status, mdEscape(firstLine(r.Reason)), goal, result)
			continue
		}
		z := r.zdt()
		peer, xp, xf := "—", "—", "—"
		if p := r.fastestPeer(); p != nil {
			peer = fmt.Sprintf("%s %s", p.Label, secs(p.Median))
			xp = fmtX(ratio(z.Median, p.Median))
		}
		if f := r.floor(); f != nil {
			xf = fmtX(ratio(z.Median, f.Median))
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n",
			r.Name, secs(z.Median), humanBytes(z.PeakRSS), peer, xp, xf, goal, result)
	}
	return b.String()
}

func mdEscape(s string) string { return strings.ReplaceAll(s, "|", "\\|") }

// markdown renders bench/results.md.
func markdown(res *Results) string {
	var b strings.Builder
	b.WriteString("# zdt benchmarks\n\n")
	b.WriteString("Written by `make bench` (internal/cmd/zdtbench); do not edit by hand.\n\n")
	fmt.Fprintf(&b, "- **When**: %s, %s in all, BENCH_SIZE=%s, %d runs per command, interleaved (A B C A B C …)\n",
		res.Started.UTC().Format("2006-01-02 15:04 MST"), (time.Duration(res.Seconds) * time.Second).String(), res.Size, res.Runs)
	fmt.Fprintf(&b, "- **Machine**: %s\n", res.Machine)
	fmt.Fprintf(&b, "- **Tools**: %s\n", res.Machine.toolList())
	fmt.Fprintf(&b, "- **Load**: 1-minute load average %s at the start, %s at the end (the machine's other work competes for the same %d CPUs)\n",
		res.Machine.LoadStart, res.Machine.LoadEnd, res.Machine.CPUs)
	fmt.Fprintf(&b, "- **Content**: %s\n", res.Content)
	b.WriteString("- Times are medians of wall time with a warm page cache; peak RSS is the largest of the runs " +
		"(wait4 rusage of the command and its children; VmHWM of the server for serve rows). " +
		"Ratios are zdt's median ÷ the other command's: below 1 zdt is faster.\n\n")
	b.WriteString("## Summary\n\n")
	b.WriteString(summaryTable(res))
	b.WriteString("\n## Rows\n")
	for _, r := range res.Rows {
		fmt.Fprintf(&b, "\n### %s — %s\n\n", r.Name, r.Title)
		if r.Status == "ok" {
			fmt.Fprintf(&b, "The row took %s.\n\n", (time.Duration(r.Seconds) * time.Second).String())
		}
		if r.Status != "ok" {
			fmt.Fprintf(&b, "**%s**: %s\n\n", r.Status, r.Reason)
		}
		if r.Note != "" {
			fmt.Fprintf(&b, "%s\n\n", r.Note)
		}
		b.WriteString("| | command | median | min – max | peak RSS | throughput | zdt ÷ this |\n|---|---|---|---|---|---|---|\n")
		z := r.zdt()
		for _, c := range r.Commands {
			who := string(c.Role)
			if c.Role != RoleZdt {
				who += " " + c.Label
			}
			cmd := "`" + mdEscape(c.Command) + "`"
			switch {
			case c.NA != "":
				fmt.Fprintf(&b, "| %s | %s | n/a: %s | | | | |\n", who, cmd, mdEscape(c.NA))
				continue
			case c.Error != "":
				fmt.Fprintf(&b, "| %s | %s | error: %s | | | | |\n", who, cmd, mdEscape(firstLine(c.Error)))
				continue
			case len(c.Runs) == 0:
				fmt.Fprintf(&b, "| %s | %s | not run | | | | |\n", who, cmd)
				continue
			}
			x := "—"
			if z != nil && c != z {
				x = fmtX(ratio(z.Median, c.Median))
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s – %s | %s | %s | %s |\n", who, cmd, secs(c.Median), secs(c.Min), secs(c.Max),
				humanBytes(c.PeakRSS), rate(r.Bytes, c.Median), x)
		}
		for _, g := range r.Goals {
			fmt.Fprintf(&b, "\nGoal %s: **%s**", g.Goal, g.Result)
			if g.Detail != "" {
				fmt.Fprintf(&b, " (%s)", g.Detail)
			}
			b.WriteString(".\n")
		}
	}
	b.WriteString("\n## Legend\n\n")
	for _, l := range res.Legend {
		fmt.Fprintf(&b, "- `%s`: %s\n", l[0], l[1])
	}
	return b.String()
}

const (
	readmeBegin = "<!-- zdtbench:begin -->"
	readmeEnd   = "<!-- zdtbench:end -->"
)

// readmeSection is what replaces the README's marked Performance block.
func readmeSection(res *Results) string {
	var b strings.Builder
	b.WriteString(readmeBegin + "\n")
	fmt.Fprintf(&b, "Latest run (%s, BENCH_SIZE=%s, %d interleaved runs per command, medians, %s in all): %s; load average %s → %s; %s.\n",
		res.Started.UTC().Format("2006-01-02"), res.Size, res.Runs, (time.Duration(res.Seconds) * time.Second).String(),
		res.Machine, res.Machine.LoadStart, res.Machine.LoadEnd, res.Machine.toolList())
	fmt.Fprintf(&b, "Content: %s.\n\n", res.Content)
	b.WriteString(summaryTable(res))
	b.WriteString("\nEvery command, peer and floor of each row, with min/max and throughput: [bench/results.md](bench/results.md) ([JSON](bench/results.json)).\n")
	b.WriteString(readmeEnd)
	return b.String()
}

// updateReadme replaces the block between the markers in path.
func updateReadme(path string, res *Results) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	s := string(b)
	i, j := strings.Index(s, readmeBegin), strings.Index(s, readmeEnd)
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %s … %s block", path, readmeBegin, readmeEnd)
	}
	s = s[:i] + readmeSection(res) + s[j+len(readmeEnd):]
	return writeFileAtomic(path, []byte(s))
}
