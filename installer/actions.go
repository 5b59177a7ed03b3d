package installer

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"zdt.dev/zdt/manifests"
)

// Component actions (manifests.Action) are commands of the signed spec
// that install runs on this host: every component's before actions, in
// component order, before anything of the bundle is applied (after the
// plan, before files are vacated or placed and before the registry
// import), and every component's after actions, in component order, once
// everything is in place (files placed, generated configuration written,
// the registry serving the new bundle, the charts deployed when there is
// a cluster) and before the generation is recorded. An action with
// onChange (the default) runs only when its component changed: an item
// of it (file, image, chart, AMI) added, changed, repaired or removed, or
// one of its releases installed, upgraded or uninstalled; onChange: false
// runs on every install. --plan lists them and runs none.

// Env names zdt gives every action (the spec may not set ZDT_*).
const (
	EnvBundleName    = "ZDT_BUNDLE_NAME"    // metadata.name
	EnvBundleVersion = "ZDT_BUNDLE_VERSION" // metadata.version
	EnvBundleDigest  = "ZDT_BUNDLE_DIGEST"  // the root digest, sha256:…
	EnvRoot          = "ZDT_ROOT"           // the install root, absolute (/ on a host)
	EnvComponent     = "ZDT_COMPONENT"      // the action's component
	EnvNodeName      = "ZDT_NODE_NAME"      // Options.NodeName (default: the host name)
	EnvAction        = "ZDT_ACTION"         // the action's name
	EnvActionPhase   = "ZDT_ACTION_PHASE"   // before or after
	EnvGeneration    = "ZDT_GENERATION"     // the generation being installed (current when nothing changes)
)

// MaxActionOutput is how much of an action's output (stdout and stderr
// together, the last bytes) is kept for its error; all of it is logged.
const MaxActionOutput = 64 << 10

// maxLogLine bounds one logged line of action output; a longer line is
// logged in pieces.
const maxLogLine = 4 << 10

// actionWaitDelay is how long an action's output is still read once it
// exited (a background child may hold it open) or was killed.
const actionWaitDelay = 2 * time.Second

// Why an action runs.
const (
	ReasonChanged = "component changed"
	ReasonAlways  = "onChange: false"
)

// ActionRun is one component action: in a plan, one that would run; in a
// result and a generation, one that ran and succeeded.
type ActionRun struct {
	Component string `json:"component"`
	Phase     string `json:"phase"` // before or after
	// Index is the action's place in its component's phase list.
	Index   int      `json:"index"`
	Name    string   `json:"name"`
	Command []string `json:"command"` // argv, as the spec wrote it
	Reason  string   `json:"reason"`
	// DurationMs is how long it ran (not in a plan).
	DurationMs int64 `json:"durationMs,omitempty"`

	spec manifests.Action
}

// ID names the action in logs and errors: component/phase[index] (name).
func (a ActionRun) ID() string {
	return fmt.Sprintf("%s/%s[%d] %s", a.Component, a.Phase, a.Index, a.Name)
}

// ErrAction is matched by every failure of a component action.
var ErrAction = errors.New("component action failed")

// ActionError is a component action that failed: it exited non-zero,
// was killed (its timeout, install cancelled), or could not start.
type ActionError struct {
	Component, Phase, Name string
	Index                  int
	Command                []string
	// ExitCode is the action's exit status; -1 when it did not exit by
	// itself (killed, not started).
	ExitCode int
	// TimedOut is set when its Timeout ran out (it and its process group
	// were killed).
	TimedOut bool
	Timeout  time.Duration
	// Output is the last MaxActionOutput bytes of its output; Truncated
	// says there was more.
	Output    []byte
	Truncated bool
	Err       error
}

func (e *ActionError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "component %s: %s action %q (%s[%d]): ", e.Component, e.Phase, e.Name, e.Phase, e.Index)
	switch {
	case e.TimedOut:
		fmt.Fprintf(&b, "timed out after %s (killed with its process group)", e.Timeout)
	case e.ExitCode >= 0:
		fmt.Fprintf(&b, "exit status %d", e.ExitCode)
	default:
		b.WriteString(e.Err.Error())
	}
	cmd := quoteArgv(e.Command)
	if len(cmd) > 200 {
		cmd = strings.ToValidUTF8(cmd[:200], "") + "…"
	}
	fmt.Fprintf(&b, "; command: %s", cmd)
	if len(e.Output) > 0 {
		what := "output"
		if e.Truncated {
			what = fmt.Sprintf("output, last %d bytes", len(e.Output))
		}
		fmt.Fprintf(&b, "\n--- %s ---\n%s", what, strings.TrimRight(strings.ToValidUTF8(string(e.Output), "\uFFFD"), "\n"))
		b.WriteString("\n---")
	} else {
		b.WriteString(" (no output)")
	}
	return b.String()
}

func (e *ActionError) Unwrap() error { return e.Err }

// Is makes errors.Is(err, ErrAction) true.
func (e *ActionError) Is(target error) bool { return target == ErrAction }

func quoteArgv(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$`|&;<>()*?[]{}~#") {
			a = strconv.Quote(a)
		}
		out[i] = a
	}
	return strings.Join(out, " ")
}

// specActions reads the components' actions from the bundle's signed spec
// (a bundle without a spec has none). A spec that does not parse is
// refused: install cannot tell what it would run.
func specActions(cfgSpec string) ([]manifests.Component, error) {
	if cfgSpec == "" {
		return nil, nil
	}
	spec, err := manifests.Parse("zdt.yaml (bundle config)", []byte(cfgSpec))
	if err != nil {
		return nil, fmt.Errorf("%w: the bundle's spec: %w", ErrInvalidItem, err)
	}
	return spec.Components, nil
}

// planActions lists in p.Actions the actions installing p runs: every
// before action, then every after action, each in component order, of the
// components that change (or with onChange: false).
func (r *run) planActions(p *Plan) error {
	comps, err := specActions(r.a.Config.Spec)
	if err != nil {
		return err
	}
	changed := map[string]bool{}
	for _, c := range p.Changes {
		if c.Action != ActionUnchanged && c.Component != "" {
			changed[c.Component] = true
		}
	}
	for _, rc := range p.Releases {
		if rc.Action != ReleaseUnchanged {
			changed[rc.Component] = true
		}
	}
	p.Actions = nil
	for _, phase := range []string{manifests.PhaseBefore, manifests.PhaseAfter} {
		for _, comp := range comps {
			list := comp.Actions.Before
			if phase == manifests.PhaseAfter {
				list = comp.Actions.After
			}
			for i, act := range list {
				reason := ReasonChanged
				if !act.RunsOnChange() {
					reason = ReasonAlways
				} else if !changed[comp.Name] {
					continue
				}
				p.Actions = append(p.Actions, ActionRun{Component: comp.Name, Phase: phase, Index: i, Name: act.DisplayName(),
					Command: append([]string{act.Command}, act.Args...), Reason: reason, spec: act})
			}
		}
	}
	return nil
}

// runActions runs the plan's actions of one phase in order, appending
// each that succeeded to r.ran; the first failure stops them.
func (r *run) runActions(ctx context.Context, phase string, generation int) error {
	for _, pa := range r.plan.Actions {
		if pa.Phase != phase {
			continue
		}
		done, err := r.runAction(ctx, pa, generation)
		if err != nil {
			return err
		}
		r.ran = append(r.ran, done)
	}
	return nil
}

// runAction runs one action: argv without a shell, in its own process
// group, stdin empty, stdout and stderr logged line by line (prefixed with
// its ID) and their tail kept for the error.
func (r *run) runAction(ctx context.Context, pa ActionRun, generation int) (ActionRun, error) {
	act := pa.spec
	fail := func(exit int, err error) *ActionError {
		return &ActionError{Component: pa.Component, Phase: pa.Phase, Name: pa.Name, Index: pa.Index, Command: pa.Command, ExitCode: exit, Err: err}
	}
	timeout, err := act.TimeoutDuration()
	if err != nil {
		return pa, fail(-1, err)
	}
	absRoot, err := filepath.Abs(r.opts.Root)
	if err != nil {
		return pa, fail(-1, err)
	}
	dir := absRoot
	if act.Dir != "" {
		dir = filepath.Join(absRoot, filepath.FromSlash(act.Dir))
	}
	// The working directory is opened through the root (a symlink out of
	// it is refused) and the command started in that open directory, not
	// at its path: a directory swapped for a symlink after the check
	// cannot move the action out of the root.
	wd, err := openActionDir(r.root, absRoot, act.Dir)
	if err != nil {
		return pa, fail(-1, err)
	}
	defer wd.Close()
	if testHookActionDir != nil {
		testHookActionDir(dir)
	}
	// PWD is the directory's path (the kernel's is the open directory).
	env := append(os.Environ(), "PWD="+dir)
	for _, k := range slices.Sorted(maps.Keys(act.Env)) {
		env = append(env, k+"="+act.Env[k])
	}
	node := r.opts.NodeName
	if node == "" {
		node, _ = os.Hostname()
	}
	env = append(env,
		EnvBundleName+"="+r.a.Config.Name,
		EnvBundleVersion+"="+r.a.Config.Version,
		EnvBundleDigest+"="+r.a.Root.Digest.String(),
		EnvRoot+"="+absRoot,
		EnvComponent+"="+pa.Component,
		EnvNodeName+"="+node,
		EnvAction+"="+pa.Name,
		EnvActionPhase+"="+pa.Phase,
		EnvGeneration+"="+strconv.Itoa(generation),
	)
	pathEnv := os.Getenv("PATH")
	if p, ok := act.Env["PATH"]; ok {
		pathEnv = p
	}
	prog, err := lookPath(act.Command, pathEnv)
	if err != nil {
		return pa, fail(-1, err)
	}

	tctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(tctx, prog, act.Args...)
	cmd.Args[0] = act.Command
	cmd.Env, cmd.Dir = env, wd.procPath()
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The whole process group goes: a shell's children with it.
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = actionWaitDelay
	out := &actionOutput{log: r.opts.Logger, prefix: "[" + pa.ID() + "] "}
	cmd.Stdout, cmd.Stderr = out, out

	r.opts.Logger.Info("running action", "component", pa.Component, "phase", pa.Phase, "action", pa.Name,
		"command", quoteArgv(pa.Command), "reason", pa.Reason, "timeout", timeout)
	start := time.Now()
	err = cmd.Start()
	// The child has changed into it (or failed to): it is no longer needed.
	wd.Close()
	if err != nil {
		return pa, fail(-1, fmt.Errorf("starting: %w", err))
	}
	err = cmd.Wait()
	// Whatever of its group is left after a kill goes too.
	if tctx.Err() != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	out.flush()
	pa.DurationMs = time.Since(start).Milliseconds()
	if errors.Is(err, exec.ErrWaitDelay) && cmd.ProcessState != nil && cmd.ProcessState.Success() {
		// It exited 0; a background child kept its output open.
		r.opts.Logger.Warn("action exited but left processes holding its output; their output is not collected",
			"component", pa.Component, "phase", pa.Phase, "action", pa.Name)
		err = nil
	}
	if err == nil {
		r.opts.Logger.Info("action done", "component", pa.Component, "phase", pa.Phase, "action", pa.Name, "duration", time.Since(start).Round(time.Millisecond))
		return pa, nil
	}
	e := fail(-1, err)
	e.Output, e.Truncated = out.tailBytes()
	switch {
	case ctx.Err() != nil: // install cancelled
		e.Err = fmt.Errorf("cancelled: %w", context.Cause(ctx))
	case tctx.Err() != nil:
		e.TimedOut, e.Timeout = true, timeout
		e.Err = fmt.Errorf("timed out after %s: %w", timeout, context.DeadlineExceeded)
	default:
		var xe *exec.ExitError
		if errors.As(err, &xe) {
			if ws, ok := xe.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				e.Err = fmt.Errorf("killed by signal %s", ws.Signal())
			} else {
				e.ExitCode = xe.ExitCode()
			}
		}
	}
	return pa, e
}

// lookPath finds command: an absolute path as it is, a name in the
// absolute directories of pathEnv (relative ones are never searched).
func lookPath(command, pathEnv string) (string, error) {
	if strings.Contains(command, "/") {
		return command, nil
	}
	for _, d := range filepath.SplitList(pathEnv) {
		if !filepath.IsAbs(d) {
			continue
		}
		p := filepath.Join(d, command)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("command %q not found in PATH (%s): %w", command, pathEnv, fs.ErrNotExist)
}

// actionOutput logs an action's output line by line and keeps its tail.
// exec calls Write from one goroutine at a time (stdout and stderr are
// this one writer); the mutex guards against anything else.
type actionOutput struct {
	log    *slog.Logger
	prefix string

	mu    sync.Mutex
	line  []byte // the unfinished line
	tail  []byte // the last bytes (up to 2×MaxActionOutput, trimmed to MaxActionOutput when read)
	total int64
}

func (o *actionOutput) Write(p []byte) (int, error) {
	n := len(p)
	o.mu.Lock()
	defer o.mu.Unlock()
	o.total += int64(len(p))
	o.tail = append(o.tail, p...)
	if len(o.tail) > 2*MaxActionOutput {
		o.tail = append(o.tail[:0], o.tail[len(o.tail)-MaxActionOutput:]...)
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			o.line = append(o.line, p...)
			for len(o.line) >= maxLogLine {
				o.emit(o.line[:maxLogLine])
				o.line = append(o.line[:0], o.line[maxLogLine:]...)
			}
			break
		}
		o.line = append(o.line, p[:i]...)
		for len(o.line) > maxLogLine {
			o.emit(o.line[:maxLogLine])
			o.line = append(o.line[:0], o.line[maxLogLine:]...)
		}
		o.emit(o.line)
		o.line = o.line[:0]
		p = p[i+1:]
	}
	return n, nil
}

func (o *actionOutput) emit(line []byte) {
	o.log.Info(o.prefix + strings.TrimRight(strings.ToValidUTF8(string(line), "\uFFFD"), "\r"))
}

// flush logs an unfinished last line.
func (o *actionOutput) flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.line) > 0 {
		o.emit(o.line)
		o.line = nil
	}
}

// tailBytes is the last MaxActionOutput bytes and whether there was more.
func (o *actionOutput) tailBytes() ([]byte, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	t := o.tail
	if len(t) > MaxActionOutput {
		t = t[len(t)-MaxActionOutput:]
	}
	return append([]byte(nil), t...), o.total > int64(len(t))
}
