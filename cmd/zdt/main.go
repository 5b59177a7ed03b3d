// Command zdt carries a Kubernetes platform release across an air gap:
// `zdt bundle create` on a connected machine, `zdt install` on the other side.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, cancel := context.WithCancelCause(context.Background())
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sigs
		signal.Stop(sigs) // a second Ctrl-C kills at once
		cancel(interrupted{s.(syscall.Signal)})
	}()
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	os.Exit(code)
}
