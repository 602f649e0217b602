// Package cli implements the coffer command line: admin verbs against a
// coffer-server, audit verification, and image scanning.
package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"coffer/internal/version"
)

// Main runs coffer with args and returns its exit code; errors are
// reported on stderr (as an object with -o json or -o yaml).
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	root := NewRoot(stdout, stderr)
	root.SetArgs(args)
	root.SetIn(stdin)
	cmd, err := root.ExecuteC()
	code := ExitCode(err)
	if err != nil {
		report(stderr, cmd, err, code)
	}
	return code
}

// NewRoot builds the coffer command tree writing to out and errOut.
func NewRoot(out, errOut io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "coffer",
		Short: "Coffer: secrets delivered into container memory",
		Long: `coffer manages a Coffer server: secrets (write-only), bindings of secrets
to containers by label selector, tokens, agents and the audit trail.
It also scans container images for secrets baked into them.

Connection, for every server command (flags > environment > context):
  --addr URL (alias --server host:port)   COFFER_ADDR    default https://127.0.0.1:7443
  --cacert FILE (alias --ca-cert)         COFFER_CACERT  the server's <data-dir>/ca.pem
  --token-file FILE, or --token TOKEN     COFFER_TOKEN_FILE, COFFER_TOKEN
  (coffer login: a directory session)     $XDG_CONFIG_HOME/coffer/token, for its server
  --context NAME                          COFFER_CONTEXT a context of ` + configPathHelp + `
                                          (coffer config set-context / use-context)

` + exitCodesHelp,
		Version:       version.Get().String(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("coffer {{.Version}}\n")
	root.SetOut(out)
	root.SetErr(errOut)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError(err) })
	root.SetGlobalNormalizationFunc(flagAliases)
	c := &conn{errOut: errOut}
	servers := []*cobra.Command{newSecretCmd(c), newBindCmd(c), newTokenCmd(c), newAuditCmd(c), newAgentCmd(c), newWhoamiCmd(c),
		newRolloutCmd(c), newApplyCmd(c), newExportCmd(c), newKeystoreCmd(c), newIncidentCmd(c), newLoginCmd(c), newLogoutCmd(c)}
	for _, group := range servers {
		c.flags(group) // connection flags belong to the commands that talk to a server
		root.AddCommand(group)
	}
	root.AddCommand(newScanCmd(), newConfigCmd(c), newVersionCmd())
	root.AddCommand(newExecCmd())
	root.SetHelpCommand(newHelpCmd())
	root.InitDefaultHelpCmd() // now rather than in Execute: the tree is whole for the walks below
	root.InitDefaultCompletionCmd()
	for _, group := range servers {
		walk(group, func(cmd *cobra.Command) {
			if cmd.Runnable() && cmd.Flags().Lookup("output") == nil {
				withOutput(c, cmd)
			}
		})
	}
	walk(root, func(cmd *cobra.Command) {
		if f := cmd.Flags().Lookup("output"); f != nil {
			if o, ok := f.Value.(*output); ok {
				o.conn = c
			}
		}
		if cmd != root && cmd.HasSubCommands() && !cmd.Runnable() {
			groupRun(cmd)
		}
	})
	completions(c, root)
	return root
}

// walk calls fn on cmd and every command below it.
func walk(cmd *cobra.Command, fn func(*cobra.Command)) {
	fn(cmd)
	for _, sub := range cmd.Commands() {
		walk(sub, fn)
	}
}

// flagAliases keeps the CLI's and coffer-agent's flag names
// interchangeable: --server is --addr (host:port or https://host:port),
// --ca-cert is --cacert.
func flagAliases(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	switch name {
	case "server":
		name = "addr"
	case "ca-cert":
		name = "cacert"
	}
	return pflag.NormalizedName(name)
}

// groupRun makes a command group answer an unknown subcommand with a usage
// error (cobra would print the group's help and exit 0), and print its help
// when called alone.
func groupRun(cmd *cobra.Command) {
	cmd.Args = cobra.ArbitraryArgs
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		if len(args) == 0 {
			return cmd.Help()
		}
		msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
		if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
			msg += "; did you mean " + strings.Join(s, " or ") + "?"
		}
		return usageError(fmt.Errorf("%s (see %s --help)", msg, cmd.CommandPath()))
	}
}

// newHelpCmd replaces cobra's help command, which exits 0 on an unknown
// topic.
func newHelpCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "help [command]",
		Short:   "Help about any command",
		Example: "  coffer help secret put\n  coffer secret put --help   # the same",
		RunE: func(cmd *cobra.Command, args []string) error {
			target, rest, err := cmd.Root().Find(args)
			if err != nil || len(rest) > 0 {
				return usageError(fmt.Errorf("unknown help topic %q (see coffer --help)", strings.Join(args, " ")))
			}
			return target.Help()
		},
		ValidArgsFunction: func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
			target, _, err := cmd.Root().Find(args)
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			var out []cobra.Completion
			for _, sub := range target.Commands() {
				if sub.IsAvailableCommand() && strings.HasPrefix(sub.Name(), toComplete) {
					out = append(out, cobra.CompletionWithDesc(sub.Name(), sub.Short))
				}
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		},
	}
}
