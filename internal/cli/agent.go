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
			if err := o.check(); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			var as []struct {
				Name       string    `json:"name"`
				Address    string    `json:"address"`
				Enrolled   time.Time `json:"enrolled"`
				LastSeen   time.Time `json:"last_seen"`
				Connected  bool      `json:"connected"`
				Containers int       `json:"containers"`
			}
			if err := cl.do("GET", "/v1/agents", nil, &as); err != nil {
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
	rm := &cobra.Command{
		Use:     "rm NAME",
		Short:   "Revoke an agent: its stream closes at once and its certificate is refused",
		Example: "  coffer agent rm node-7",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			if err := cl.do("DELETE", "/v1/agents/"+escapePath(args[0]), nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "agent %s: revoked\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(ls, rm)
	return cmd
}
