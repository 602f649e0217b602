package cli

import "github.com/spf13/cobra"

// newScanCmd is replaced by the scanner's command tree.
func newScanCmd() *cobra.Command {
	return &cobra.Command{Use: "scan", Short: "Find secrets baked into container images"}
}
