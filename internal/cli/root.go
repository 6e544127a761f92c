// Package cli builds the acgs command tree: one file per subcommand, each turning
// flags and environment into a config and running it. It holds no service logic.
package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
)

// subcommands is filled by each subcommand file's init so that files can be
// added without editing this one.
var subcommands []func() *cobra.Command

func register(f func() *cobra.Command) { subcommands = append(subcommands, f) }

// ExitError carries a process exit code (for gates such as load and slo that
// exit 1 on a violation) without printing a usage message.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit status %d", e.Code)
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// NewRoot builds the root command with every registered subcommand.
func NewRoot() *cobra.Command {
	root := &cobra.Command{
		Use:           "acgs",
		Short:         "ACGS-1 Lite: a constitutional policy decision service built on OPA",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, f := range subcommands {
		root.AddCommand(f())
	}
	for _, c := range root.Commands() {
		refuseUnknownSubcommands(c)
	}
	return root
}

// refuseUnknownSubcommands makes every command that only groups others
// (acgs regress, policy, audit, ...) refuse a name it does not have, as
// the root does. Cobra prints such a group's help and exits 0 instead, so
// a typo in a CI step (acgs regress compair) passed as a gate that held.
// Without arguments a group still prints its help.
func refuseUnknownSubcommands(c *cobra.Command) {
	if !c.HasSubCommands() {
		return
	}
	if c.Run == nil && c.RunE == nil {
		c.Args = cobra.NoArgs
		c.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	}
	for _, sub := range c.Commands() {
		refuseUnknownSubcommands(sub)
	}
}

// Execute runs the root command and returns the process exit code.
func Execute() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	err := NewRoot().ExecuteContext(ctx)
	var ee *ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		if ee.Err != nil {
			fmt.Fprintln(os.Stderr, "acgs:", ee.Err)
		}
	default:
		fmt.Fprintln(os.Stderr, "acgs:", err)
	}
	return exitCode(err)
}

// exitCode is the process exit code of a command's error: 0 for none, an
// ExitError's code, else 1.
func exitCode(err error) int {
	var ee *ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.Code
	}
	return 1
}
