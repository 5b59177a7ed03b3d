package installer

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/bundle/build"
	"zdt.dev/zdt/manifests"
	"zdt.dev/zdt/registry"
)

// actComp is a component of an actions test bundle: files by target and
// its actions as YAML (the value of `actions:`, indented 6 spaces).
type actComp struct {
	name    string
	files   map[string]string
	actions string
}

// buildActions creates bundle act VERSION of comps in dir.
func buildActions(t *testing.T, dir, version string, comps ...actComp) string {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: zdt.dev/v1alpha1\nkind: Bundle\nmetadata: {name: act, version: %q}\ncomponents:\n", version)
	for _, c := range comps {
		fmt.Fprintf(&b, "  - name: %s\n    files:\n", c.name)
		for _, target := range keys(c.files) {
			sum := sha256.Sum256([]byte(c.files[target]))
			src := filepath.Join(dir, "src", version, c.name, hex.EncodeToString(sum[:8]))
			if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(src, []byte(c.files[target]), 0o644); err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(&b, "      - {source: %q, sha256: %s, target: %q}\n", src, hex.EncodeToString(sum[:]), target)
		}
		if c.actions != "" {
			fmt.Fprintf(&b, "    actions:\n%s", c.actions)
		}
	}
	spec, err := manifests.Parse("zdt.yaml", []byte(b.String()))
	if err != nil {
		t.Fatalf("%v\n%s", err, b.String())
	}
	out := filepath.Join(dir, "act-"+version+".zdt")
	if _, err := build.Create(context.Background(), spec, build.CreateOptions{Output: out}); err != nil {
		t.Fatal(err)
	}
	return out
}

// logAction is an action that appends "COMPONENT PHASE NAME" to $LOG.
func logAction(name string, extra ...string) string {
	s := fmt.Sprintf("        - name: %s\n          command: sh\n          args: [-c, 'echo \"$ZDT_COMPONENT $ZDT_ACTION_PHASE $ZDT_ACTION\" >> \"$LOG\"']\n          env: {LOG: %%LOG%%}\n", name)
	for _, e := range extra {
		s += "          " + e + "\n"
	}
	return s
}

// withLog puts the log path into actions written by logAction.
func withLog(actions, log string) string {
	return strings.ReplaceAll(actions, "%LOG%", strconv.Quote(log))
}

func installActs(t *testing.T, archive, root string, opts Options) (Result, error) {
	t.Helper()
	a, err := bundle.Open(context.Background(), archive)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if !opts.PlanOnly {
		if err := os.MkdirAll(root, 0o755); err != nil {
			t.Fatal(err)
		}
		reg, err := registry.OpenStore(root, registry.StoreOptions{})
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Close()
		opts.Registry = reg
	}
	opts.Root, opts.ToolVersion = root, "test"
	return Install(context.Background(), a, opts)
}

// readLog returns the lines of the action log and empties it.
func readLog(t *testing.T, log string) []string {
	t.Helper()
	b, err := os.ReadFile(log)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(log)
	return strings.Split(strings.TrimSpace(string(b)), "\n")
}

func ranIDs(rs []ActionRun) []string {
	var out []string
	for _, r := range rs {
		out = append(out, r.Component+" "+r.Phase+" "+r.Name)
	}
	return out
}

// TestActionsRunOnChange: the first install runs every component's
// actions (before ones before anything is placed, after ones once it is),
// installing the same bundle again runs none, and a bundle in which one
// component's file changed runs that component's actions only; actions
// with onChange: false run every time, --plan runs nothing but lists
// them, and the generation records what ran.
func TestActionsRunOnChange(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	log := filepath.Join(dir, "actions.log")
	// before: whether the kubelet is placed yet; after: what it holds.
	kubeletActs := withLog(`      before:
        - name: stop
          command: sh
          args: [-c, 'if test -e "$ZDT_ROOT/usr/bin/kubelet"; then echo "$ZDT_COMPONENT before stop: $(cat "$ZDT_ROOT/usr/bin/kubelet")"; else echo "$ZDT_COMPONENT before stop: absent"; fi >> "$LOG"']
          env: {LOG: %LOG%}
      after:
`+logAction("restart")+logAction("always", "onChange: false"), log)
	appActs := withLog("      after:\n"+logAction("reload"), log)
	comps := func(kubelet, app string) []actComp {
		return []actComp{
			{name: "kubelet", files: map[string]string{"/usr/bin/kubelet": kubelet}, actions: kubeletActs},
			{name: "app", files: map[string]string{"/etc/app.conf": app}, actions: appActs},
		}
	}
	v1 := buildActions(t, dir, "1", comps("kubelet v1", "app v1")...)
	v2 := buildActions(t, dir, "2", comps("kubelet v2", "app v1")...)
	v3 := buildActions(t, dir, "3", comps("kubelet v2", "app v3")...)

	// --plan: lists, runs nothing.
	res, err := installActs(t, v1, root, Options{PlanOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	wantFirst := []string{"kubelet before stop", "kubelet after restart", "kubelet after always", "app after reload"}
	if got := ranIDs(res.Plan.Actions); !slices.Equal(got, wantFirst) {
		t.Errorf("plan actions = %q, want %q", got, wantFirst)
	}
	if got := readLog(t, log); got != nil {
		t.Fatalf("--plan ran actions: %q", got)
	}

	steps := []struct {
		name     string
		archive  string
		log      []string
		ran      []string
		recorded bool
	}{
		{"first install runs all", v1, []string{"kubelet before stop: absent", "kubelet after restart", "kubelet after always", "app after reload"}, wantFirst, true},
		{"same bundle runs only onChange false", v1, []string{"kubelet after always"}, []string{"kubelet after always"}, false},
		{"kubelet changed", v2, []string{"kubelet before stop: kubelet v1", "kubelet after restart", "kubelet after always"},
			[]string{"kubelet before stop", "kubelet after restart", "kubelet after always"}, true},
		{"app changed", v3, []string{"kubelet after always", "app after reload"}, []string{"kubelet after always", "app after reload"}, true},
		{"same again", v3, []string{"kubelet after always"}, []string{"kubelet after always"}, false},
	}
	for _, st := range steps {
		res, err := installActs(t, st.archive, root, Options{NodeName: "node-1"})
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := readLog(t, log); !slices.Equal(got, st.log) {
			t.Errorf("%s: actions logged %q, want %q", st.name, got, st.log)
		}
		if got := ranIDs(res.Actions); !slices.Equal(got, st.ran) {
			t.Errorf("%s: Result.Actions = %q, want %q", st.name, got, st.ran)
		}
		if res.Applied != st.recorded {
			t.Errorf("%s: applied = %v, want %v", st.name, res.Applied, st.recorded)
		}
		if st.recorded {
			s, err := GetStatus(context.Background(), root)
			if err != nil {
				t.Fatal(err)
			}
			if got := ranIDs(s.Generation.Actions); !slices.Equal(got, st.ran) {
				t.Errorf("%s: generation %d records actions %q, want %q", st.name, s.Generation.Number, got, st.ran)
			}
		}
	}
	// The plan of a changed bundle lists exactly what would run.
	res, err = installActs(t, v1, root, Options{PlanOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := ranIDs(res.Plan.Actions); !slices.Equal(got, wantFirst) {
		t.Errorf("plan of v1 over v3: actions = %q, want %q", got, wantFirst)
	}
	if got := readLog(t, log); got != nil {
		t.Errorf("--plan ran actions: %q", got)
	}
}

// TestActionEnv: an action gets the documented ZDT_* variables, its own
// env, runs in the root (or its dir under the root) without a shell, and
// cannot override zdt's variables through an inherited environment.
func TestActionEnv(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	out := filepath.Join(dir, "env.out")
	t.Setenv("ZDT_COMPONENT", "inherited") // zdt's value wins
	acts := fmt.Sprintf(`      after:
        - name: dump-env
          command: /bin/sh
          args: [-c, 'env > "$OUT"; echo "PWD=$(pwd)" >> "$OUT"; printf "ARG=%%s\n" "$0" >> "$OUT"', 'a b; $(echo no)']
          env: {OUT: %q, EXTRA: "x=y"}
          dir: /etc
`, out)
	arch := buildActions(t, dir, "1.2.3", actComp{name: "node", files: map[string]string{"/etc/node.conf": "n"}, actions: acts})
	res, err := installActs(t, arch, root, Options{NodeName: "worker-7"})
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok {
			env[k] = v
		}
	}
	absRoot, _ := filepath.Abs(root)
	want := map[string]string{
		EnvBundleName:    "act",
		EnvBundleVersion: "1.2.3",
		EnvBundleDigest:  res.Plan.BundleDigest,
		EnvRoot:          absRoot,
		EnvComponent:     "node",
		EnvNodeName:      "worker-7",
		EnvAction:        "dump-env",
		EnvActionPhase:   "after",
		EnvGeneration:    "1",
		"EXTRA":          "x=y",
		"PWD":            filepath.Join(absRoot, "etc"),
		"ARG":            "a b; $(echo no)", // one argv element, no shell expansion
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("%s = %q, want %q", k, env[k], v)
		}
	}
	if !strings.HasPrefix(res.Plan.BundleDigest, "sha256:") || os.Getenv("PATH") == "" || env["PATH"] != os.Getenv("PATH") {
		t.Errorf("digest %q, PATH %q (zdt's %q)", res.Plan.BundleDigest, env["PATH"], os.Getenv("PATH"))
	}
}

// TestActionAfterFails: a failing after action fails the install naming
// the component, the action and its exit status, with its output (the
// tail of it); no generation is recorded, so the re-run retries and,
// once the action succeeds, records one.
func TestActionAfterFails(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	flag := filepath.Join(dir, "fail")
	if err := os.WriteFile(flag, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	acts := fmt.Sprintf(`      after:
        - name: join
          command: sh
          args: [-c, 'i=0; while [ $i -lt 3000 ]; do echo "noise line $i of the join attempt"; i=$((i+1)); done; echo "kubeadm: cannot reach the control plane" >&2; if [ -e "$FLAG" ]; then exit 3; fi; echo joined']
          env: {FLAG: %q}
`, flag)
	arch := buildActions(t, dir, "1", actComp{name: "node", files: map[string]string{"/etc/node.conf": "n"}, actions: acts})
	var logBuf lockedBuffer
	logger := slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	_, err := installActs(t, arch, root, Options{Logger: logger})
	var ae *ActionError
	if !errors.As(err, &ae) || !errors.Is(err, ErrAction) {
		t.Fatalf("install error = %v, want an ActionError", err)
	}
	if ae.Component != "node" || ae.Phase != "after" || ae.Name != "join" || ae.ExitCode != 3 || ae.TimedOut {
		t.Errorf("ActionError = %+v", ae)
	}
	msg := err.Error()
	t.Logf("head of the error: %.200s", msg)
	for _, want := range []string{"component node", "after action", `"join"`, "exit status 3", "kubeadm: cannot reach the control plane", "noise line 2999 of the join attempt"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error does not say %q:\n%.400s", want, msg)
		}
	}
	// ~105 KiB of output: the error keeps the last MaxActionOutput bytes.
	if !ae.Truncated || len(ae.Output) != MaxActionOutput || strings.Contains(msg, "noise line 0 of") {
		t.Errorf("output kept: %d bytes, truncated %v", len(ae.Output), ae.Truncated)
	}
	// Every line was logged, prefixed with the component and action.
	logged := logBuf.String()
	for _, want := range []string{"[node/after[0] join] noise line 0 of the join attempt", "[node/after[0] join] kubeadm: cannot reach the control plane"} {
		if !strings.Contains(logged, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	if s, err := GetStatus(context.Background(), root); err != nil || s.Installed {
		t.Fatalf("status after the failed install: installed %v, %v; want nothing installed", s.Installed, err)
	}
	// Fixed: the re-run retries the action and records the generation.
	os.Remove(flag)
	res, err := installActs(t, arch, root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ranIDs(res.Actions); !res.Applied || res.Generation != 1 || !slices.Equal(got, []string{"node after join"}) {
		t.Errorf("re-run: applied %v generation %d actions %q", res.Applied, res.Generation, got)
	}
}

// TestActionBeforeFails: a failing before action stops the install
// before anything of the bundle is placed.
func TestActionBeforeFails(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	acts := "      before:\n        - command: /bin/false\n"
	arch := buildActions(t, dir, "1", actComp{name: "node", files: map[string]string{"/etc/node.conf": "n"}, actions: acts})
	_, err := installActs(t, arch, root, Options{})
	var ae *ActionError
	if !errors.As(err, &ae) || ae.Phase != "before" || ae.Name != "false" || ae.ExitCode != 1 || !strings.Contains(err.Error(), "(no output)") {
		t.Fatalf("install error = %v, want before action false's exit status 1", err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/node.conf")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the file was placed although a before action failed: %v", err)
	}
}

// TestActionTimeout: an action that outlives its timeout is killed with
// its process group (a child it started in the background included) and
// fails the install, soon after the timeout.
func TestActionTimeout(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	pids := filepath.Join(dir, "pids")
	acts := fmt.Sprintf(`      after:
        - name: hang
          command: sh
          args: [-c, 'sleep 60 & echo $! > "$PIDS"; echo started; sleep 60']
          env: {PIDS: %q}
          timeout: 1s
`, pids)
	arch := buildActions(t, dir, "1", actComp{name: "node", files: map[string]string{"/etc/node.conf": "n"}, actions: acts})
	start := time.Now()
	_, err := installActs(t, arch, root, Options{})
	took := time.Since(start)
	var ae *ActionError
	if !errors.As(err, &ae) || !ae.TimedOut || ae.Timeout != time.Second || ae.ExitCode != -1 || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("install error = %v, want a timeout", err)
	}
	if !strings.Contains(err.Error(), "timed out after 1s") || !strings.Contains(err.Error(), "started") {
		t.Errorf("error = %v", err)
	}
	if took > 8*time.Second {
		t.Errorf("install took %s with a 1s action timeout", took)
	}
	b, err := os.ReadFile(pids)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for !processGone(pid) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("the action's background child %d still runs", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if s, err := GetStatus(context.Background(), root); err != nil || s.Installed {
		t.Errorf("status after the timed-out install: installed %v, %v; want nothing installed", s.Installed, err)
	}
}

// processGone reports whether pid has exited (gone, or a zombie nobody
// reaped yet).
func processGone(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) STATE ...
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// TestActionsHostileSpec: a bundle whose signed spec says what an action
// may not (a reserved variable, a shell line as the command) is refused
// before anything runs or is written; --plan refuses it too.
func TestActionsHostileSpec(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "root")
	arch := buildActions(t, dir, "1", actComp{name: "node", files: map[string]string{"/etc/node.conf": "n"},
		actions: "      after:\n        - command: /bin/true\n"})
	a, err := bundle.Open(context.Background(), arch)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	a.Config.Spec = strings.Replace(a.Config.Spec, "command: /bin/true", "command: touch /tmp/pwned\n          env: {ZDT_ROOT: /}", 1)
	for _, plan := range []bool{true, false} {
		_, err := Install(context.Background(), a, Options{Root: root, PlanOnly: plan})
		if !errors.Is(err, ErrInvalidItem) || !strings.Contains(err.Error(), "reserved") || !strings.Contains(err.Error(), "holds spaces") {
			t.Errorf("plan %v: %v, want the spec refused", plan, err)
		}
	}
	if _, err := os.Stat(root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("root created for a refused bundle: %v", err)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
