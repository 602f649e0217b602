package cli

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
)

func newAgentCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{Use: "agent", Short: "List and revoke coffer-agents"}
	var o output
	ls := &cobra.Command{
		Use:     "ls",
		Short:   "List agents: name, address, last seen, containers served",
		Example: "  coffer agent ls\n  coffer agent ls -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var as []struct {
				Name       string    `json:"name"`
				Address    string    `json:"address"`
				Enrolled   time.Time `json:"enrolled"`
				LastSeen   time.Time `json:"last_seen"`
				Connected  bool      `json:"connected"`
				Containers int       `json:"containers"`
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
				rows = append(rows, []string{a.Name, dash(a.Address), state, seen, fmt.Sprint(a.Containers)})
			}
			return o.print(cmd.OutOrStdout(), as, []string{"NAME", "ADDRESS", "STATE", "LAST SEEN", "CONTAINERS"}, rows)
		},
	}
	o.flag(ls)
	rm := deleteCmd(c, "rm NAME", "Revoke an agent: its stream closes at once and its certificate is refused",
		"  coffer agent rm node-7", "/v1/agents/", "agent %s: revoked\n")
	cmd.AddCommand(ls, rm)
	return cmd
}
