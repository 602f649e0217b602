package cli

import (
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"coffer/internal/authn"
	"coffer/internal/authz"
	"coffer/internal/policy"
)

type tokenInfo struct {
	Token       string            `json:"token,omitempty"`
	ID          string            `json:"id"`
	Role        string            `json:"role"`
	Scope       string            `json:"scope,omitempty"`
	Description string            `json:"description,omitempty"`
	CreatedBy   string            `json:"created_by"`
	Created     time.Time         `json:"created"`
	Expires     time.Time         `json:"expires,omitzero"`
	OneTime     bool              `json:"one_time,omitempty"`
	AgentLabels map[string]string `json:"agent_labels,omitempty"`
	Used        bool              `json:"used,omitempty"`
}

func newTokenCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create, list and revoke tokens"}
	cmd.AddCommand(newTokenCreateCmd(c), newTokenLsCmd(c), newTokenRevokeCmd(c))
	return cmd
}

func newTokenCreateCmd(c *conn) *cobra.Command {
	var o output
	var role, scope, desc, agentLabels, ttl string
	cmd := &cobra.Command{
		Use:   "create --role ROLE",
		Short: "Create a token (printed once, alone on stdout)",
		Long: `Create a token. Roles: admin (everything), operator (secrets and bindings),
auditor (audit trail and metadata), viewer (metadata), agent (a one-time join
token for enrolling a coffer-agent; default TTL 1h). --ttl takes Go durations
plus days and weeks (30d, 2w); a token without --ttl never expires (coffer
says so on stderr), --ttl never says it explicitly, and --ttl 0s is refused. --scope limits a token to
names under a prefix; a scoped token creates tokens only within its scope, and
its join tokens get its scope when --scope is not given. The agent enrolled
with a join token inherits the token's scope: it receives no secret outside
it. --agent-labels (role agent only) gives that agent labels, which bindings
with a host selector match; they are bound into its certificate and the agent
cannot change them. The token is printed once, alone on stdout; only its hash
is kept.`,
		Example: `  coffer token create --role operator --scope 'payments/*' --ttl 30d
  coffer token create --role admin --ttl never --description 'break-glass, in the safe'
  coffer token create --role agent --ttl 1h
  coffer token create --role agent --agent-labels env=prod,zone=eu-1 --scope 'payments/*'
  coffer token create --role auditor -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if role == "" {
				return usageError(fmt.Errorf("--role is required: admin, operator, auditor, viewer or agent"))
			}
			if _, err := authz.ParseRole(role); err != nil {
				return usageError(fmt.Errorf("--role: %w", err))
			}
			if ttl != "" {
				d, err := authn.ParseTTL(ttl)
				if err != nil {
					return usageError(fmt.Errorf("--ttl: %w", err))
				}
				if d == 0 && role == "agent" {
					return usageError(fmt.Errorf("--ttl never: a join token must expire (at most %s)", authn.MaxJoinTTL))
				}
			}
			req := map[string]any{"role": role, "scope": scope, "description": desc}
			if cmd.Flags().Changed("agent-labels") {
				if role != "agent" {
					return usageError(fmt.Errorf("--agent-labels: only for --role agent (a join token)"))
				}
				ls, err := policy.ParseLabels(agentLabels)
				if err != nil {
					return usageError(fmt.Errorf("--agent-labels: %s", strings.TrimPrefix(err.Error(), policy.ErrInvalid.Error()+": ")))
				}
				req["agent_labels"] = ls
			}
			if ttl != "" {
				req["ttl"] = ttl
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			var t tokenInfo
			if err := cl.do("POST", "/v1/tokens", req, &t); err != nil {
				return err
			}
			if t.Expires.IsZero() && ttl != authn.Never {
				fmt.Fprintf(cmd.ErrOrStderr(), "coffer: note: token %s never expires (revoke it with coffer token revoke %s; give --ttl 30d for one that does, or --ttl never to say so)\n", t.ID, t.ID)
			}
			if o.structured() {
				return o.print(cmd.OutOrStdout(), t, nil, nil)
			}
			fmt.Fprintln(cmd.OutOrStdout(), t.Token)
			return nil
		},
	}
	cmd.Flags().StringVar(&role, "role", "", "admin, operator, auditor, viewer or agent (required)")
	cmd.Flags().StringVar(&ttl, "ttl", "", `lifetime: 90m, 24h, 30d, 2w, or "never" (default: never, with a note; agent: 1h, at most 7d); 0s is refused`)
	cmd.Flags().StringVar(&scope, "scope", "", "limit to names under this prefix, e.g. payments/*")
	cmd.Flags().StringVar(&desc, "description", "", "what the token is for")
	cmd.Flags().StringVar(&agentLabels, "agent-labels", "", "role agent: the enrolled agent's labels, e.g. env=prod,zone=eu-1")
	o.flagWithHelp(cmd, "table (the token alone), json or yaml (the token with its record)")
	return cmd
}

func newTokenLsCmd(c *conn) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:     "ls",
		Short:   "List tokens within your token's scope (never the tokens themselves)",
		Example: "  coffer token ls -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ts []tokenInfo
			if err := c.get(&o, "/v1/tokens", &ts); err != nil {
				return err
			}
			rows := [][]string{}
			for _, t := range ts {
				exp := "never"
				if !t.Expires.IsZero() {
					exp = t.Expires.Format(time.RFC3339)
				}
				state := "active"
				if t.Used {
					state = "used"
				} else if !t.Expires.IsZero() && time.Now().After(t.Expires) {
					state = "expired"
				}
				rows = append(rows, []string{t.ID, t.Role, dash(t.Scope), dash(policy.FormatLabels(t.AgentLabels)), exp, state, dash(t.Description)})
			}
			return o.print(cmd.OutOrStdout(), ts, []string{"ID", "ROLE", "SCOPE", "AGENT LABELS", "EXPIRES", "STATE", "DESCRIPTION"}, rows)
		},
	}
	o.flag(cmd)
	return cmd
}

func newTokenRevokeCmd(c *conn) *cobra.Command {
	return deleteCmd(c, "revoke ID", "Revoke a token by id; it stops working at once",
		"  coffer token revoke 3f2a9c0d1e2b4a5c", "/v1/tokens/", "token %s: revoked\n")
}
