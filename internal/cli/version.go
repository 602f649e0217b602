package cli

import (
	"fmt"

	"github.com/spf13/cobra"

	"coffer/internal/version"
)

func newVersionCmd() *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:     "version",
		Short:   "Print coffer's version, commit and Go version",
		Example: "  coffer version\n  coffer version -o json\n  coffer --version",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := version.Get()
			if o.structured() {
				return o.print(cmd.OutOrStdout(), v, nil, nil)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "coffer", v)
			return nil
		},
	}
	o.flag(cmd)
	return cmd
}
