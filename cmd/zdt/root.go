package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"syscall"
	"unicode"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"zdt.dev/zdt/bundle"
	"zdt.dev/zdt/installer"
)

// Exit codes; documented in `zdt --help` and the README.
const (
	exitOK           = 0
	exitError        = 1
	exitUsage        = 2
	exitVerification = 3
	exitPlanChanges  = 4
	exitUnhealthy    = 5
)

// usageError marks errors in how zdt was called (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// globals are the flags every command takes.
type globals struct {
	output  string // text or json
	verbose bool
	stdout  io.Writer
	stderr  io.Writer
}

func (g *globals) json() bool { return g.output == "json" }

func (g *globals) logger() *slog.Logger {
	level := slog.LevelWarn
	if g.verbose {
		level = slog.LevelInfo
	}
	if g.json() {
		return slog.New(slog.NewJSONHandler(g.stderr, &slog.HandlerOptions{Level: level}))
	}
	return slog.New(slog.NewTextHandler(g.stderr, &slog.HandlerOptions{Level: level}))
}

// isTerminal reports whether stderr is a terminal (progress bars only then).
func (g *globals) isTerminal() bool {
	f, ok := g.stderr.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newRootCmd(g *globals) *cobra.Command {
	root := &cobra.Command{
		Use:   "zdt",
		Short: "Carry a Kubernetes platform release across an air gap",
		Long: `zdt collects container images, Helm charts, host binaries and AMI / VM disk
images into one signed OCI archive (a "bundle") on a connected machine, and
verifies, serves and installs it on an air-gapped host.

Data goes to stdout, logs and progress to stderr. Every command takes
--output json.

Exit codes:
  0  ok
  1  error
  2  usage error
  3  verification failed (signature or digest)
  4  plan has changes (install --plan --detailed-exitcode)
  5  installed files drifted or the registry storage has problems (status)
  130, 143  stopped by Ctrl-C (SIGINT) or SIGTERM; nothing is left half-written`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(g.stdout)
	root.SetErr(g.stderr)
	root.PersistentFlags().StringVar(&g.output, "output", "text", "output format: text or json")
	root.PersistentFlags().BoolVarP(&g.verbose, "verbose", "v", false, "log what is being done")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if g.output != "text" && g.output != "json" {
			return usageError{fmt.Errorf("--output must be text or json, not %q", g.output)}
		}
		return nil
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newBundleCmd(g), newSchemaCmd(g), newVersionCmd(g), newServeCmd(g), newKeyCmd(g))
	root.AddCommand(newInstallCmd(g), newStatusCmd(g), newRollbackCmd(g), newUninstallCmd(g), newPushCmd(g))
	root.AddCommand(newCacheCmd(g), newRolloutCmd(g), newAgentCmd(g))
	return root
}

// run executes zdt with args and returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	g := &globals{stdout: stdout, stderr: stderr}
	root := newRootCmd(g)
	root.SetArgs(args)
	// help and completion are added by cobra only while executing; add them
	// now so that the unknown-command check below knows them.
	root.InitDefaultHelpCmd()
	root.InitDefaultCompletionCmd()
	if len(args) == 0 || !strings.HasPrefix(args[0], "__complete") {
		if _, _, ferr := root.Find(args); ferr != nil {
			fmt.Fprintf(stderr, "zdt: %v\n", ferr)
			return exitUsage
		}
	}
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	var sig interrupted
	if errors.As(context.Cause(ctx), &sig) {
		// The shell's convention for a command stopped by a signal: 130
		// for Ctrl-C, 143 for SIGTERM.
		code = 128 + int(sig.Signal)
	}
	if g.json() {
		enc := json.NewEncoder(stderr)
		_ = enc.Encode(errorLine{Error: err.Error(), ExitCode: code})
	} else {
		fmt.Fprintf(stderr, "zdt: %s\n", terminalText(err.Error()))
	}
	return code
}

// terminalText keeps an error's line breaks and tabs (an action's output,
// lists of refused items) and escapes every other rune that does not print
// as itself: errors quote registries' status lines, cluster objects and
// archive names, any of which may carry terminal escape sequences.
func terminalText(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t' || unicode.IsPrint(r):
			b.WriteRune(r)
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
	}
	return b.String()
}

func exitCode(err error) int {
	var ue usageError
	switch {
	case errors.As(err, &ue), errors.Is(err, installer.ErrAmbiguousName):
		return exitUsage
	case errors.Is(err, bundle.ErrVerification):
		return exitVerification
	case errors.Is(err, errPlanChanges):
		return exitPlanChanges
	case errors.Is(err, errUnhealthy):
		return exitUnhealthy
	}
	return exitError
}

var errPlanChanges = errors.New("plan has changes")

// errUnhealthy is what `zdt status` returns when files drifted or the
// registry storage has problems (exit 5).
var errUnhealthy = errors.New("not healthy")

// interrupted is the cause of the command's context when a signal stopped
// it; the exit code is then 128 + the signal's number.
type interrupted struct{ Signal syscall.Signal }

func (i interrupted) Error() string { return "interrupted by " + i.Signal.String() }

// group makes cmd a command that only groups subcommands: run alone it
// prints its help, and an unknown subcommand is a usage error (exit 2)
// naming it and suggesting the closest ones, where cobra would print the
// help and exit 0.
func group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], c.CommandPath())
		c.SuggestionsMinimumDistance = 2 // cobra's default, set only on the root
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "\n\nDid you mean this?\n\t" + strings.Join(s, "\n\t")
		}
		return usageError{errors.New(msg)}
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	return cmd
}

// exactArgs is cobra.ExactArgs with a usage error (exit 2).
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError{fmt.Errorf("%s takes %d argument(s), got %d; see --help", cmd.CommandPath(), n, len(args))}
		}
		return nil
	}
}
