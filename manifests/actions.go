package manifests

import (
	"fmt"
	"maps"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Actions are the commands a component runs on the installing host, from
// the signed spec: Before ones before anything of the bundle is applied,
// After ones once everything is in place (files, registry, generated
// configuration, charts deployed). Each runs, by default, only when
// something of its component changed.
type Actions struct {
	Before []Action `yaml:"before" doc:"Run in order before anything of the bundle is applied (files, registry, charts)."`
	After  []Action `yaml:"after" doc:"Run in order once everything of the bundle is in place: files, registry content, generated configuration, and charts deployed when a cluster is configured."`
	Pos    Pos      `yaml:"-"`
}

// Action is one command a component runs at install time. It is run
// directly (argv), never through a shell: write command sh and args
// [-c, "..."] for one.
type Action struct {
	Name    string            `yaml:"name" doc:"Name in logs, errors and the generation record (default: the command's base name); letters, digits, '.', '_', '-', unique in the component."`
	Command string            `yaml:"command" zdt:"required" doc:"Program to run: an absolute path, or a name looked up in PATH (env's PATH if it sets one). No shell: write sh with args [-c, ...] for one."`
	Args    []string          `yaml:"args" doc:"Arguments after the command."`
	Env     map[string]string `yaml:"env" doc:"Environment added to zdt's (names ZDT_* are reserved: zdt sets ZDT_BUNDLE_NAME, ZDT_BUNDLE_VERSION, ZDT_BUNDLE_DIGEST, ZDT_ROOT, ZDT_COMPONENT, ZDT_NODE_NAME, ZDT_ACTION, ZDT_ACTION_PHASE, ZDT_GENERATION)."`
	Dir     string            `yaml:"dir" doc:"Working directory: an absolute path under the install root, which must exist (default: the root itself)."`
	Timeout string            `yaml:"timeout" doc:"How long it may run, a Go duration like 90s or 5m (default 10m, at most 24h); then it and its process group are killed and the install fails."`
	// OnChange nil means true.
	OnChange *bool `yaml:"onChange" default:"true" doc:"true (default): run only when something of the component changed (a file, image, chart or release added, changed, repaired or removed), so installing the same bundle again runs nothing; false: run on every install (not --plan)."`
	Pos      Pos   `yaml:"-"`
}

// DefaultActionTimeout is an action's timeout when the spec gives none;
// MaxActionTimeout is the longest it may give.
const (
	DefaultActionTimeout = 10 * time.Minute
	MaxActionTimeout     = 24 * time.Hour
)

// Action phases.
const (
	PhaseBefore = "before"
	PhaseAfter  = "after"
)

// DisplayName is the action's name: Name, or the command's base name.
func (a Action) DisplayName() string {
	if a.Name != "" {
		return a.Name
	}
	return path.Base(a.Command)
}

// RunsOnChange reports whether the action runs only when its component
// changed (onChange, default true).
func (a Action) RunsOnChange() bool { return a.OnChange == nil || *a.OnChange }

// TimeoutDuration is the action's timeout (DefaultActionTimeout when
// unset). A spec Parse accepted always has a valid one.
func (a Action) TimeoutDuration() (time.Duration, error) {
	if a.Timeout == "" {
		return DefaultActionTimeout, nil
	}
	d, err := time.ParseDuration(a.Timeout)
	if err != nil {
		return 0, fmt.Errorf("timeout %q is not a duration like 90s or 5m", a.Timeout)
	}
	if d <= 0 || d > MaxActionTimeout {
		return 0, fmt.Errorf("timeout %q must be more than 0 and at most %s", a.Timeout, MaxActionTimeout)
	}
	return d, nil
}

var (
	reActionName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$`)
	reEnvName    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// ReservedEnvPrefix starts the names of the variables zdt gives every
// action; a spec may not set them.
const ReservedEnvPrefix = "ZDT_"

// actions checks a component's actions at where (components[i]).
func (v *validator) actions(where, comp string, acts Actions) {
	names := map[string]int{}
	for _, phase := range []struct {
		name string
		list []Action
	}{{PhaseBefore, acts.Before}, {PhaseAfter, acts.After}} {
		for i, a := range phase.list {
			v.action(fmt.Sprintf("%s.actions.%s[%d]", where, phase.name, i), comp, a, names)
		}
	}
}

// action checks one action at item; names holds the action names of its
// component seen so far.
func (v *validator) action(item, comp string, a Action, names map[string]int) {
	c, at := v.c, v.at
	what := fmt.Sprintf("component %q: action %q", comp, a.DisplayName())
	if a.Name != "" {
		if !reActionName.MatchString(a.Name) {
			c.add(at(item+".name", a.Pos), "component %q: action name %q must be letters, digits, '.', '_' or '-' (at most 64)", comp, a.Name)
		} else {
			v.dup(names, a.Name, at(item+".name", a.Pos), fmt.Sprintf("component %q: action %q", comp, a.Name))
		}
	}
	switch cmd := a.Command; {
	case cmd == "":
		// Reported by the decoder (required).
	case strings.ContainsRune(cmd, 0):
		c.add(at(item+".command", a.Pos), "%s: command contains a NUL byte", what)
	case strings.TrimSpace(cmd) != cmd || strings.ContainsAny(cmd, " \t\n"):
		c.add(at(item+".command", a.Pos), "%s: command %q holds spaces: it is one program, run without a shell (put its arguments in args, or write command: sh and args: [-c, ...])", what, cmd)
	case strings.Contains(cmd, "/") && (!path.IsAbs(cmd) || path.Clean(cmd) != cmd || cmd == "/"), cmd == "." || cmd == "..":
		c.add(at(item+".command", a.Pos), "%s: command %q must be an absolute clean path or a name looked up in PATH", what, cmd)
	}
	for i, arg := range a.Args {
		if strings.ContainsRune(arg, 0) {
			c.add(at(fmt.Sprintf("%s.args[%d]", item, i), a.Pos), "%s: args[%d] contains a NUL byte", what, i)
		}
	}
	for _, k := range sortedKeys(a.Env) {
		p := at(item+".env."+k, a.Pos)
		switch {
		case !reEnvName.MatchString(k):
			c.add(p, "%s: env name %q must be letters, digits and '_', not starting with a digit", what, k)
		case strings.HasPrefix(strings.ToUpper(k), ReservedEnvPrefix):
			c.add(p, "%s: env name %q is reserved (zdt sets the %s* variables)", what, k, ReservedEnvPrefix)
		case strings.ContainsRune(a.Env[k], 0):
			c.add(p, "%s: env %s contains a NUL byte", what, k)
		}
	}
	if a.Dir != "" && (!path.IsAbs(a.Dir) || path.Clean(a.Dir) != a.Dir || strings.ContainsRune(a.Dir, 0)) {
		c.add(at(item+".dir", a.Pos), "%s: dir %q must be an absolute clean path (under the install root)", what, a.Dir)
	}
	if _, err := a.TimeoutDuration(); err != nil {
		c.add(at(item+".timeout", a.Pos), "%s: %v", what, err)
	}
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }
