// Package cli implements the coffer command line: admin verbs against a
// coffer-server, audit verification, and image scanning.
package cli

import (
	"errors"
	"io"
	"strings"

	"github.com/spf13/cobra"
)

// Exit codes of every coffer command.
const (
	ExitOK      = 0
	ExitFailure = 1
	ExitUsage   = 2
)

// ExitError carries the exit code a command wants. Commands return it for
// anything but plain failure (exit 1).
type ExitError struct {
	Code int
	Err  error // may be nil: exit with Code and print nothing more
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return ""
	}
	return e.Err.Error()
}

func (e *ExitError) Unwrap() error { return e.Err }

// usageError marks err as a usage error (exit 2).
func usageError(err error) error { return &ExitError{Code: ExitUsage, Err: err} }

// ExitCode maps an error returned by Execute to a process exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	// cobra's own usage errors.
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "required flag", "flag needs an argument", "invalid argument"} {
		if strings.HasPrefix(err.Error(), p) {
			return ExitUsage
		}
	}
	return ExitFailure
}

// NewRoot builds the coffer command tree writing to out and errOut.
func NewRoot(out, errOut io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "coffer",
		Short: "Coffer: secrets delivered into container memory",
		Long: `coffer manages a Coffer server: secrets (write-only), bindings of secrets
to containers by label selector, tokens, agents and the audit trail.
It also scans container images for secrets baked into them.

Connection: --addr/COFFER_ADDR, --token/COFFER_TOKEN, --cacert/COFFER_CACERT.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(out)
	root.SetErr(errOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	c := &conn{}
	for _, group := range []*cobra.Command{newSecretCmd(c), newBindCmd(c), newTokenCmd(c), newAuditCmd(c), newAgentCmd(c),
		newRolloutCmd(c), newApplyCmd(c), newExportCmd(c)} {
		c.flags(group) // connection flags belong to the commands that talk to a server
		root.AddCommand(group)
	}
	root.AddCommand(newScanCmd())
	return root
}
