package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"coffer/internal/policy"
)

func newAgentCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "List and revoke coffer-agents"}
	var o output
	ls := &cobra.Command{
		Use:     "ls",
		Short:   "List agents within your token's scope: name, address, last seen, containers served, labels, scope",
		Example: "  coffer agent ls\n  coffer agent ls -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var as []struct {
				Name       string            `json:"name"`
				Address    string            `json:"address"`
				Enrolled   time.Time         `json:"enrolled"`
				LastSeen   time.Time         `json:"last_seen"`
				Connected  bool              `json:"connected"`
				Containers int               `json:"containers"`
				Labels     map[string]string `json:"labels,omitempty"`
				Scope      string            `json:"scope,omitempty"`
			}
			if err := c.get(&o, "/v1/agents", &as); err != nil {
				return err
			}
			rows := [][]string{}
			for _, a := range as {
				seen := "never"
				if !a.LastSeen.IsZero() {
					seen = a.LastSeen.Format(time.RFC3339)
				}
				state := "offline"
				if a.Connected {
					state = "connected"
				}
				rows = append(rows, []string{a.Name, dash(a.Address), state, seen, fmt.Sprint(a.Containers), dash(policy.FormatLabels(a.Labels)), dash(a.Scope)})
			}
			return o.print(cmd.OutOrStdout(), as, []string{"NAME", "ADDRESS", "STATE", "LAST SEEN", "CONTAINERS", "LABELS", "SCOPE"}, rows)
		},
	}
	o.flag(ls)
	rm := deleteCmd(c, "rm NAME", "Revoke an agent: its stream closes at once and its certificates are refused; its name is free again",
		"  coffer agent rm node-7", "/v1/agents/", "agent %s: revoked\n")
	cmd.AddCommand(ls, rm)
	return cmd
}
