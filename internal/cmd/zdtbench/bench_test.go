package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestWorkloadFor(t *testing.T) {
	for _, tc := range []struct {
		size     string
		wantErr  bool
		wantBase int64
		wantName string
	}{
		{"", false, 64 * mib, "default"},
		{"default", false, 64 * mib, "default"},
		{"small", false, 8 * mib, "small"},
		{"4G", false, 128 * mib, "4G"},
		{"1g", false, 32 * mib, "1G"},
		{"512MiB", false, 16 * mib, "512MIB"},
		{"huge", true, 0, ""},
		{"-1G", true, 0, ""},
	} {
		t.Run(tc.size, func(t *testing.T) {
			w, err := workloadFor(tc.size)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if err != nil {
				return
			}
			if w.BaseSize != tc.wantBase || w.Name != tc.wantName {
				t.Errorf("got base %d name %q, want %d %q", w.BaseSize, w.Name, tc.wantBase, tc.wantName)
			}
			if w.Images < 1 || w.Clients < 1 || w.HotImages < 1 {
				t.Errorf("degenerate workload %+v", w)
			}
		})
	}
	a, _ := workloadFor("small")
	a2, _ := workloadFor("small")
	b, _ := workloadFor("default")
	if a.key() == b.key() || a.key() != a2.key() {
		t.Errorf("dataset keys: small %s, default %s", a.key(), b.key())
	}
}

func TestBuildLayerDeterministic(t *testing.T) {
	dir := t.TempDir()
	l1, err := buildLayer(dir, "x", 3*mib+123)
	if err != nil {
		t.Fatal(err)
	}
	l2, err := buildLayer(dir, "x", 3*mib+123)
	if err != nil {
		t.Fatal(err)
	}
	l3, err := buildLayer(dir, "y", 3*mib+123)
	if err != nil {
		t.Fatal(err)
	}
	if l1.Digest != l2.Digest || l1.DiffID != l2.DiffID || l1.Size != l2.Size {
		t.Errorf("same seed, different layers: %+v %+v", l1, l2)
	}
	if l1.Digest == l3.Digest {
		t.Errorf("different seeds, same layer %s", l1.Digest)
	}
	if fi, err := os.Stat(l1.path); err != nil || fi.Size() != l1.Size || l1.Size < 3*mib {
		t.Errorf("layer file: %v, size %d", err, l1.Size)
	}
}

func TestContentFileCompressible(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	f, err := writeContentFile(p, "s", 2*mib+5)
	if err != nil {
		t.Fatal(err)
	}
	h, err := hashFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if h.SHA256 != f.SHA256 || h.Size != 2*mib+5 {
		t.Errorf("hash %s/%d, want %s/%d", h.SHA256, h.Size, f.SHA256, 2*mib+5)
	}
	data, _ := os.ReadFile(p)
	if string(data[mib:mib+4*kib]) != string(data[mib+4*kib:mib+8*kib]) {
		t.Error("odd chunk is not the repeated pattern")
	}
}

// row builds a finished RowResult with these medians (seconds; 0: absent).
func row(name string, zdt, peer, floor float64, rss int64) *RowResult {
	r := &RowResult{Name: name, Status: "ok"}
	add := func(role Role, label string, med float64) {
		if med == 0 {
			return
		}
		c := &CmdResult{Role: role, Label: label, Runs: []RunResult{{med, rss}, {med, rss}, {med, rss}}}
		c.stats()
		r.Commands = append(r.Commands, c)
	}
	add(RoleZdt, "zdt", zdt)
	add(RolePeer, "slow", peer*2)
	add(RolePeer, "fast", peer)
	add(RoleFloor, "openssl", floor)
	return r
}

func TestGoals(t *testing.T) {
	all := map[string]*RowResult{"base": row("base", 10, 0, 0, 0)}
	for _, tc := range []struct {
		name   string
		r      *RowResult
		goal   Goal
		result string
		detail string
	}{
		{"peer met", row("a", 4, 10, 0, 0), vsFastestPeer(0.5), "met", "0.40× fast"},
		{"peer missed", row("a", 6, 10, 0, 0), vsFastestPeer(0.5), "missed", "0.60× fast"},
		{"no peer", row("a", 6, 0, 0, 0), vsFastestPeer(0.5), "n/a", ""},
		{"floor met", row("a", 3, 0, 2, 0), vsFloor(1.5), "met", "1.50× floor"},
		{"floor missed", row("a", 4, 0, 2, 0), vsFloor(1.5), "missed", "2.00× floor"},
		{"wall", row("a", 2.5, 0, 0, 0), wallUnder(2), "missed", "2.50 s"},
		{"rss met", row("a", 1, 0, 0, 100*mib), rssUnder(200 * mib), "met", "100 MiB"},
		{"rss missed", row("a", 1, 0, 0, 300*mib), rssUnder(200 * mib), "missed", "300 MiB"},
		{"vs row", row("a", 0.5, 0, 0, 0), vsRow("base", 0.1), "met", "0.050× base"},
		{"vs missing row", row("a", 0.5, 0, 0, 0), vsRow("nope", 0.1), "n/a", ""},
		{"throughput", row("a", 11, 10, 0, 0), throughputVsPeer(0.9), "met", "0.91× fast"},
		{"throughput missed", row("a", 12, 10, 0, 0), throughputVsPeer(0.9), "missed", "0.83× fast"},
		{"flat", row("a", 0.3, 0, 0, 0), flatVsRow("base", 2, 0.1), "met", "0.30 s vs 10.00 s"},
		{"row n/a", &RowResult{Name: "a", Status: "n/a"}, wallUnder(2), "n/a", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.r.goals = []Goal{tc.goal}
			judge(tc.r, all)
			if len(tc.r.Goals) != 1 {
				t.Fatalf("goals: %+v", tc.r.Goals)
			}
			if g := tc.r.Goals[0]; g.Result != tc.result || g.Detail != tc.detail {
				t.Errorf("got %s (%s), want %s (%s)", g.Result, g.Detail, tc.result, tc.detail)
			}
		})
	}
}

func TestRunnerInterleavesAndReports(t *testing.T) {
	var order []string
	mk := func(role Role, label string, wall time.Duration, fail bool) *Cmd {
		return &Cmd{Role: role, Label: label, Display: label + " --flag",
			Run: func(_ context.Context, run int) (Sample, error) {
				order = append(order, fmt.Sprintf("%s%d", label, run))
				if fail && run == 1 {
					return Sample{}, errors.New("boom\nsecond line")
				}
				return Sample{Wall: wall + time.Duration(run)*time.Millisecond, RSS: 7 * mib}, nil
			}}
	}
	r := &runner{zdt: "/nonexistent/zdt", runs: 3, progress: io.Discard, logDir: t.TempDir(), probes: map[string]string{}, byName: map[string]*RowResult{}}
	ctx := context.Background()
	res := r.runRow(ctx, &Row{
		Name: "demo", Title: "demo row", Bytes: 100 * mib,
		Cmds: []*Cmd{
			mk(RoleZdt, "zdt", 10*time.Millisecond, false),
			mk(RolePeer, "peer", 40*time.Millisecond, false),
			mk(RolePeer, "flaky", 5*time.Millisecond, true),
			{Role: RolePeer, Label: "absent", Display: "absent", Needs: []string{"no-such-program-zdtbench"},
				Run: func(context.Context, int) (Sample, error) {
					t.Error("ran a command whose program is missing")
					return Sample{}, nil
				}},
		},
		Goals: []Goal{vsFastestPeer(0.5)},
	})
	want := "zdt0 peer0 flaky0 zdt1 peer1 flaky1 zdt2 peer2"
	if got := strings.Join(order, " "); got != want {
		t.Errorf("order %q, want %q", got, want)
	}
	if res.Status != "ok" {
		t.Fatalf("status %s: %s", res.Status, res.Reason)
	}
	z := res.zdt()
	if z == nil || z.Median != 0.011 || z.Min != 0.010 || z.Max != 0.012 || z.PeakRSS != 7*mib {
		t.Errorf("zdt stats %+v", z)
	}
	if p := res.fastestPeer(); p == nil || p.Label != "peer" {
		t.Errorf("fastest peer %+v (the failed one must not count)", p)
	}
	if res.Commands[2].Error == "" || res.Commands[3].NA == "" {
		t.Errorf("flaky error %q, absent n/a %q", res.Commands[2].Error, res.Commands[3].NA)
	}
	// A row whose zdt command is missing is n/a and runs nothing.
	order = nil
	na := r.runRow(ctx, &Row{Name: "later", Probes: []Probe{{Args: []string{"install"}}}, Cmds: []*Cmd{mk(RoleZdt, "zdt", time.Millisecond, false)}})
	if na.Status != "n/a" || !strings.Contains(na.Reason, "zdt install not available") || len(order) != 0 {
		t.Errorf("status %s reason %q ran %v", na.Status, na.Reason, order)
	}
	dep := r.runRow(ctx, &Row{Name: "dep", Requires: []string{"later"}, Cmds: []*Cmd{mk(RoleZdt, "zdt", time.Millisecond, false)}})
	if dep.Status != "n/a" || !strings.Contains(dep.Reason, "later") {
		t.Errorf("dependent row: %s %q", dep.Status, dep.Reason)
	}

	results := &Results{Started: time.Unix(0, 0), Size: "small", Runs: 3, Rows: r.results, Legend: [][2]string{{"$X", "y"}}}
	for _, rr := range r.results {
		judge(rr, r.byName)
	}
	md := markdown(results)
	for _, s := range []string{"| demo | 0.01 s | 7 MiB | peer 0.04 s | 0.27× |", "met (0.27× peer)", "n/a: zdt install not available",
		"`zdt --flag`", "error: boom", "n/a: no-such-program-zdtbench not installed", "`$X`: y"} {
		if !strings.Contains(md, s) {
			t.Errorf("markdown lacks %q:\n%s", s, md)
		}
	}
	readme := filepath.Join(t.TempDir(), "README.md")
	os.WriteFile(readme, []byte("# x\n\n## Performance\n\n"+readmeBegin+"\nold\n"+readmeEnd+"\n\n## Next\n"), 0o644)
	if err := updateReadme(readme, results); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(readme)
	if strings.Contains(string(got), "old") || !strings.Contains(string(got), "| demo |") || !strings.HasSuffix(string(got), "\n\n## Next\n") {
		t.Errorf("README after update:\n%s", got)
	}
	var back Results
	if b, err := json.Marshal(results); err != nil || json.Unmarshal(b, &back) != nil || len(back.Rows) != 3 {
		t.Errorf("results JSON round trip: %v", err)
	}
}

func TestPull(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	var list strings.Builder
	var want int64
	for i := range 3 {
		img, err := random.Image(64*1024, 2)
		if err != nil {
			t.Fatal(err)
		}
		ref, err := name.ParseReference(fmt.Sprintf("%s/mirror/bench/app-%02d:1.0", host, i))
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		dg, _ := img.Digest()
		fmt.Fprintf(&list, "bench/app-%02d@%s\n", i, dg)
		m, _ := img.Manifest()
		want += m.Config.Size
		for _, l := range m.Layers {
			want += l.Size
		}
	}
	dir := t.TempDir()
	listFile, out := filepath.Join(dir, "list"), filepath.Join(dir, "out.json")
	os.WriteFile(listFile, []byte(list.String()), 0o644)
	for _, tc := range []struct {
		name      string
		args      []string
		wantBytes int64
		wantErr   bool
	}{
		{"two clients", []string{"-clients", "2"}, 2 * want, false},
		{"wrong prefix", []string{"-prefix", "other/"}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			os.Remove(out)
			args := append([]string{"-addr", host, "-list", listFile, "-prefix", "mirror/", "-out", out, "-ns", "x"}, tc.args...)
			err := pullMain(context.Background(), args)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if tc.wantErr {
				return
			}
			var res PullResult
			b, _ := os.ReadFile(out)
			if err := json.Unmarshal(b, &res); err != nil {
				t.Fatal(err)
			}
			if res.Bytes != tc.wantBytes || res.Manifests != 6 || res.Blobs != 18 {
				t.Errorf("got %+v, want %d bytes, 6 manifests, 18 blobs", res, tc.wantBytes)
			}
		})
	}
}
