package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newWhoamiCmd(c *conn) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:   "whoami",
		Short: "Show who the server takes you for: principal, role, scope, expiry (never the token)",
		Long: `Ask the server who the configured token is (GET /v1/whoami): its principal
id (as audit records name it), role, scope, expiry and the actions its role
allows, and say which server, context and token source were used. The
token itself is never printed.`,
		Example: "  coffer whoami\n  coffer whoami --context prod -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			var me struct {
				ID          string    `json:"id"`
				Role        string    `json:"role"`
				Scope       string    `json:"scope"`
				Description string    `json:"description"`
				Created     time.Time `json:"created"`
				Expires     time.Time `json:"expires"`
				Actions     []string  `json:"actions"`
				Session     string    `json:"session,omitempty"`
				Groups      []string  `json:"groups,omitempty"`
				Grants      []grant   `json:"grants,omitempty"`
			}
			if err := cl.do("GET", "/v1/whoami", nil, &me); err != nil {
				return err
			}
			if o.structured() {
				return o.print(cmd.OutOrStdout(), me, nil, nil)
			}
			exp := "never"
			if !me.Expires.IsZero() {
				exp = fmt.Sprintf("%s (in %s)", me.Expires.Format(time.RFC3339), roughly(time.Until(me.Expires)))
			}
			scope := me.Scope
			if scope == "" {
				scope = "(all names)"
			}
			if me.Session != "" && len(me.Grants) > 1 {
				// Role and scope only summarize a session's grants.
				me.Role += " (the widest of the grants below)"
				scope = "each grant's own (below)"
			}
			server := cl.base
			if cl.target.context != "" {
				server += fmt.Sprintf(" (context %s)", cl.target.context)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "ID:       %s\nRole:     %s\nScope:    %s\nExpires:  %s\n", me.ID, me.Role, scope, exp)
			if me.Description != "" {
				fmt.Fprintf(w, "About:    %s\n", me.Description)
			}
			if me.Session != "" {
				fmt.Fprintf(w, "Session:  %s (coffer logout ends it)\n", me.Session)
				for i, g := range me.Grants {
					label := "Grants:  "
					if i > 0 {
						label = "         "
					}
					fmt.Fprintf(w, "%s %s on %s\n", label, g.Role, orAll(g.Scope))
				}
				fmt.Fprintf(w, "Groups:   %s\n", dash(strings.Join(me.Groups, "; ")))
			}
			fmt.Fprintf(w, "Actions:  %s\nServer:   %s\nToken:    from %s\n", dash(strings.Join(me.Actions, ", ")), server, cl.target.tokenFrom)
			return nil
		},
	}
	o.flag(cmd)
	return cmd
}

// roughly writes a duration for people: 30d, 5h12m, 3m.
func roughly(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", (d+12*time.Hour)/(24*time.Hour))
	case d >= time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh%dm", d/time.Hour, d%time.Hour/time.Minute)
	default:
		return d.Round(time.Second).String()
	}
}
