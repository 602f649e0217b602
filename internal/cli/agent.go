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
		Short:   "List agents within your token's scope: name, address, last seen, containers served, labels, scope, anomalies",
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
				Server     string            `json:"server,omitempty"`

				ReportsLimited    uint64    `json:"reports_limited"`
				IDConflicts       uint64    `json:"id_conflicts"`
				LastAnomaly       time.Time `json:"last_anomaly"`
				LastAnomalyReason string    `json:"last_anomaly_reason"`
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
					if a.Server != "" { // several servers: which one
						state += " to " + a.Server
					}
				}
				rows = append(rows, []string{a.Name, dash(a.Address), state, seen, fmt.Sprint(a.Containers), dash(policy.FormatLabels(a.Labels)), dash(a.Scope),
					anomalies(a.IDConflicts, a.ReportsLimited, a.LastAnomaly, a.LastAnomalyReason)})
			}
			return o.print(cmd.OutOrStdout(), as, []string{"NAME", "ADDRESS", "STATE", "LAST SEEN", "CONTAINERS", "LABELS", "SCOPE", "ANOMALIES"}, rows)
		},
	}
	o.flag(ls)
	rm := deleteCmd(c, "rm NAME", "Revoke an agent: its stream closes at once and its certificates are refused; its name is free again",
		"  coffer agent rm node-7", "/v1/agents/", "agent %s: revoked\n")
	cmd.AddCommand(ls, rm)
	return cmd
}

// anomalies summarizes what the server saw an agent do that a well-behaved
// agent does not (details in the audit trail, action agent.anomaly).
func anomalies(conflicts, limited uint64, last time.Time, reason string) string {
	if last.IsZero() {
		return "-"
	}
	return fmt.Sprintf("id_conflicts=%d reports_limited=%d last=%s %s", conflicts, limited, last.Format(time.RFC3339), reason)
}
