package cli

import (
	"fmt"
	"io"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newIncidentCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "incident",
		Short: "Incident response: quarantine a host, revoke a leaked version or people, lock down, report",
		Long: `Incident response, for admins. Every action needs --reason, which goes into
the audit trail with what was done.`,
	}
	cmd.AddCommand(newQuarantineCmd(c), newRevokeVersionCmd(c), newRevokeTokensCmd(c), newLockdownCmd(c),
		newLiftCmd(c), newIncidentStatusCmd(c), newIncidentReportCmd(c))
	return cmd
}

func requireReason(reason string) error {
	if reason == "" {
		return usageError(fmt.Errorf("--reason is required: say why, for the audit trail"))
	}
	return nil
}

type heldFile struct {
	Secret  string `json:"secret"`
	Version uint64 `json:"version"`
	File    string `json:"file"`
}

func newQuarantineCmd(c *conn) *cobra.Command {
	var reason string
	var wait time.Duration
	var o output
	cmd := &cobra.Command{
		Use:   "quarantine AGENT --reason TEXT",
		Short: "Remove every secret from every container of a host at once, then revoke its agent",
		Long: `Quarantine a host: every container the agent serves loses every secret at once,
nothing more is delivered to it, and once the agent acknowledged the removal
(or --wait passed) its certificate is revoked and its stream closed. The
report lists what each container held. An agent that was offline, or did
not confirm, may leave its containers their files until they stop: the
report says so.`,
		Example: `  coffer incident quarantine node-7 --reason "IDS alert 4711: unexpected process"
  coffer incident quarantine node-7 --reason "stolen disk" --wait 30s -o json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := requireReason(reason); err != nil {
				return err
			}
			var rep struct {
				Agent string `json:"agent"`
				Held  []struct {
					ContainerID string     `json:"container_id"`
					Container   string     `json:"container"`
					Held        []heldFile `json:"held"`
					Sent        []heldFile `json:"sent"`
				} `json:"held"`
				Connected    bool `json:"connected"`
				Acknowledged bool `json:"acknowledged"`
				Revoked      bool `json:"revoked"`
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			if err := cl.do("POST", "/v1/incident/quarantine", map[string]any{"agent": args[0], "reason": reason, "wait": wait.String()}, &rep); err != nil {
				return err
			}
			return o.printWith(cmd.OutOrStdout(), rep, func(w io.Writer) {
				switch {
				case rep.Acknowledged:
					fmt.Fprintf(w, "%s: every container emptied (acknowledged) and the agent revoked\n", rep.Agent)
				case rep.Connected:
					fmt.Fprintf(w, "%s: revoked; the agent did NOT acknowledge the removal within %s: its containers may keep their files until they stop\n", rep.Agent, wait)
				default:
					fmt.Fprintf(w, "%s: revoked; the agent was not connected: its containers may keep their files until they stop\n", rep.Agent)
				}
				rows := [][]string{}
				for _, h := range rep.Held {
					for _, f := range h.Held {
						rows = append(rows, []string{h.Container, short(h.ContainerID), f.Secret, fmt.Sprint(f.Version), f.File, "held"})
					}
					for _, f := range h.Sent {
						rows = append(rows, []string{h.Container, short(h.ContainerID), f.Secret, fmt.Sprint(f.Version), f.File, "sent"})
					}
				}
				if len(rows) > 0 {
					fmt.Fprintln(w, "It held:")
					o.print(w, nil, []string{"  CONTAINER", "ID", "SECRET", "VERSION", "FILE", "STATE"}, indent(rows))
				}
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (required; recorded in the audit trail)")
	cmd.Flags().DurationVar(&wait, "wait", 10*time.Second, "how long to wait for the agent to confirm the removal before revoking it anyway (at most 2m)")
	o.flag(cmd)
	return cmd
}

type holding struct {
	Agent       string    `json:"agent"`
	ContainerID string    `json:"container_id"`
	Container   string    `json:"container"`
	File        string    `json:"file"`
	Version     uint64    `json:"version"`
	From        time.Time `json:"from"`
	To          time.Time `json:"to,omitzero"`
	Ended       string    `json:"ended,omitempty"`
	FromSeq     uint64    `json:"from_seq"`
	ToSeq       uint64    `json:"to_seq,omitempty"`
}

func holdingRows(hs []holding) [][]string {
	rows := [][]string{}
	for _, h := range hs {
		to := "now"
		if !h.To.IsZero() {
			to = h.To.Format(time.RFC3339) + " (" + strings.TrimPrefix(h.Ended, "delivery.") + ")"
		}
		rows = append(rows, []string{h.Agent, h.Container, short(h.ContainerID), h.File, fmt.Sprint(h.Version), h.From.Format(time.RFC3339), to})
	}
	return rows
}

var holdingHeader = []string{"  HOST", "CONTAINER", "ID", "FILE", "VERSION", "FROM", "TO"}

func newRevokeVersionCmd(c *conn) *cobra.Command {
	var reason, alphabet string
	var version uint64
	var replace bool
	var length int
	var o output
	cmd := &cobra.Command{
		Use:   "revoke-version SECRET --version N --reason TEXT",
		Short: "Revoke a leaked version: its value destroyed, removed from every container (or replaced)",
		Long: `Revoke a leaked version of a secret: its value is destroyed and it is never
delivered or rolled back to again. If it is the current version, every
container loses the secret now; with --replace a new value is generated on
the server and every container gets it instead (not for a linked secret:
rotate it upstream). The report lists which containers held that version,
on which hosts, from when to when.`,
		Example: `  coffer incident revoke-version payments/api-key --version 7 --reason "pasted in a public ticket" --replace
  coffer incident revoke-version payments/db-password --version 3 --reason "in a log file"`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkSecretArg(&o, args[0]); err != nil {
				return err
			}
			if err := requireReason(reason); err != nil {
				return err
			}
			if version == 0 {
				return usageError(fmt.Errorf("--version N (the leaked version) is required"))
			}
			body := map[string]any{"secret": args[0], "version": version, "reason": reason}
			if replace {
				body["replace"] = map[string]any{"length": length, "alphabet": alphabet}
			}
			var rep struct {
				Secret     string    `json:"secret"`
				Version    uint64    `json:"version"`
				WasCurrent bool      `json:"was_current"`
				Replaced   uint64    `json:"replaced"`
				HeldBy     []holding `json:"held_by"`
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			if err := cl.do("POST", "/v1/incident/revoke-version", body, &rep); err != nil {
				return err
			}
			return o.printWith(cmd.OutOrStdout(), rep, func(w io.Writer) {
				switch {
				case rep.Replaced != 0:
					fmt.Fprintf(w, "%s: version %d revoked; version %d generated in its place and sent to every container\n", rep.Secret, rep.Version, rep.Replaced)
				case rep.WasCurrent:
					fmt.Fprintf(w, "%s: version %d (the current one) revoked: every container loses the secret until a new version is stored\n", rep.Secret, rep.Version)
				default:
					fmt.Fprintf(w, "%s: version %d revoked (it was not the current version)\n", rep.Secret, rep.Version)
				}
				fmt.Fprintf(w, "Held by %d container(s):\n", len(rep.HeldBy))
				if len(rep.HeldBy) > 0 {
					o.print(w, nil, holdingHeader, indent(holdingRows(rep.HeldBy)))
				}
			})
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (required; recorded in the audit trail)")
	cmd.Flags().Uint64Var(&version, "version", 0, "the leaked version")
	cmd.Flags().BoolVar(&replace, "replace", false, "generate a new value at once (every container gets it instead of losing the secret)")
	cmd.Flags().IntVar(&length, "length", 32, "with --replace: length of the generated value")
	cmd.Flags().StringVar(&alphabet, "alphabet", "alnum", "with --replace: alnum, alpha, numeric, hex, base64url, printable")
	o.flag(cmd)
	return cmd
}

func newRevokeTokensCmd(c *conn) *cobra.Command {
	var reason, principal, role, scope, createdBy string
	var o output
	cmd := &cobra.Command{
		Use:   "revoke-tokens --reason TEXT (--principal P | --role R | --scope S | --created-by P)",
		Short: "Revoke every token of a person, a role or a scope at once",
		Long: `Revoke every token that matches all the given filters: one principal
(token:<id>, or ldap:alice for every directory session of that person), a role, a scope (every token whose scope lies within it), or
every token a principal created. Your own token is kept.`,
		Example: `  coffer incident revoke-tokens --scope payments/ --reason "payments laptop stolen"
  coffer incident revoke-tokens --created-by token:3f2a9c0d1e4b5a67 --reason "compromised admin"
  coffer incident revoke-tokens --role operator --reason "rotate all operators"
  coffer incident revoke-tokens --principal ldap:alice --reason "alice's laptop stolen"`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireReason(reason); err != nil {
				return err
			}
			if principal == "" && role == "" && scope == "" && createdBy == "" {
				return usageError(fmt.Errorf("give at least one of --principal, --role, --scope and --created-by"))
			}
			var rep struct {
				Revoked    []string `json:"revoked"`
				KeptCaller bool     `json:"kept_caller"`
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			body := map[string]string{"reason": reason, "principal": principal, "role": role, "scope": scope, "created_by": createdBy}
			if err := cl.do("POST", "/v1/incident/revoke-tokens", body, &rep); err != nil {
				return err
			}
			return o.printWith(cmd.OutOrStdout(), rep, func(w io.Writer) {
				fmt.Fprintf(w, "%d token(s) revoked\n", len(rep.Revoked))
				for _, id := range rep.Revoked {
					fmt.Fprintf(w, "  %s\n", id)
				}
				if rep.KeptCaller {
					fmt.Fprintln(w, "your own token matched and was kept (revoke it with coffer token revoke once you are done)")
				}
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&reason, "reason", "", "why (required; recorded in the audit trail)")
	f.StringVar(&principal, "principal", "", "one token (token:<id>), or every session of a person (ldap:alice)")
	f.StringVar(&role, "role", "", "every token of this role: admin, operator, auditor, viewer, agent")
	f.StringVar(&scope, "scope", "", "every token whose scope lies within this one, e.g. payments/")
	f.StringVar(&createdBy, "created-by", "", "every token this principal created, e.g. token:3f2a9c0d1e4b5a67")
	o.flag(cmd)
	return cmd
}

type lockdownStatus struct {
	Lockdown *struct {
		Since  time.Time `json:"since"`
		By     string    `json:"by"`
		Reason string    `json:"reason"`
		Freeze bool      `json:"freeze"`
	} `json:"lockdown"`
	Frozen bool `json:"frozen"`
}

func printLockdown(w io.Writer, st lockdownStatus) {
	if st.Lockdown == nil {
		fmt.Fprintln(w, "no lockdown in force")
		return
	}
	l := st.Lockdown
	fmt.Fprintf(w, "LOCKDOWN since %s by %s: %s\nwrites refused except by admins; agents may not enroll\n", l.Since.Format(time.RFC3339), l.By, l.Reason)
	if st.Frozen {
		fmt.Fprintln(w, "deliveries FROZEN: no container gets a new file, rotation or revocation")
	} else {
		fmt.Fprintln(w, "deliveries continue")
	}
}

func newLockdownCmd(c *conn) *cobra.Command {
	var reason string
	var freeze bool
	var o output
	cmd := &cobra.Command{
		Use:   "lockdown --reason TEXT [--freeze]",
		Short: "Refuse every write except by admins until lifted (--freeze: stop deliveries too)",
		Long: `Declare a lockdown: until coffer incident lift, the server refuses every write
except by admins, and no agent may enroll. Deliveries continue, or with
--freeze stop too (no container gets a new file, a rotation or a
revocation; a quarantine still empties its host). It survives restarts.`,
		Example: `  coffer incident lockdown --reason "breach under investigation"
  coffer incident lockdown --reason "suspected rogue admin" --freeze`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := requireReason(reason); err != nil {
				return err
			}
			var st lockdownStatus
			cl, err := c.client()
			if err != nil {
				return err
			}
			if err := cl.do("PUT", "/v1/incident/lockdown", map[string]any{"reason": reason, "freeze": freeze}, &st); err != nil {
				return err
			}
			return o.printWith(cmd.OutOrStdout(), st, func(w io.Writer) { printLockdown(w, st) })
		},
	}
	cmd.Flags().StringVar(&reason, "reason", "", "why (required; recorded in the audit trail)")
	cmd.Flags().BoolVar(&freeze, "freeze", false, "stop deliveries too")
	o.flag(cmd)
	return cmd
}

func newLiftCmd(c *conn) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:     "lift",
		Short:   "Lift the lockdown (frozen deliveries resume)",
		Example: `  coffer incident lift`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			if err := cl.do("DELETE", "/v1/incident/lockdown", nil, nil); err != nil {
				return err
			}
			res := struct {
				Lifted bool `json:"lifted"`
			}{true}
			return o.printWith(cmd.OutOrStdout(), res, func(w io.Writer) { fmt.Fprintln(w, "lockdown lifted") })
		},
	}
	o.flag(cmd)
	return cmd
}

func newIncidentStatusCmd(c *conn) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Show whether a lockdown is in force",
		Example: `  coffer incident status`,
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st lockdownStatus
			if err := c.get(&o, "/v1/incident/lockdown", &st); err != nil {
				return err
			}
			return o.printWith(cmd.OutOrStdout(), st, func(w io.Writer) { printLockdown(w, st) })
		},
	}
	o.flag(cmd)
	return cmd
}

func newIncidentReportCmd(c *conn) *cobra.Command {
	var name string
	var since, until string
	var o output
	cmd := &cobra.Command{
		Use:   "report --secret NAME [--since T] [--until T]",
		Short: "A secret's chain of custody: who changed it, which hosts and containers held which version when",
		Long: `Build a secret's chain of custody from the audit trail (verified first): who
changed it or tried to, who gave it a value they knew, which hosts were sent
it, and which containers held which version from when to when. Each entry
names its audit records (seq), which coffer audit ls and verify check.
--since and --until take RFC 3339 times or durations back from now (24h).`,
		Example: `  coffer incident report --secret payments/db-password --since 72h
  coffer incident report --secret payments/db-password --since 2026-11-30T00:00:00Z -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkSecretArg(&o, name); err != nil {
				return err
			}
			q := url.Values{"secret": {name}}
			for k, v := range map[string]string{"since": since, "until": until} {
				if v == "" {
					continue
				}
				t, err := parseWhen(v)
				if err != nil {
					return usageError(fmt.Errorf("--%s: %w", k, err))
				}
				q.Set(k, t.UTC().Format(time.RFC3339))
			}
			var rep struct {
				Secret  string `json:"secret"`
				Changes []struct {
					Seq     uint64    `json:"seq"`
					Time    time.Time `json:"time"`
					Actor   string    `json:"actor"`
					Action  string    `json:"action"`
					Result  string    `json:"result"`
					Version string    `json:"version"`
					Reason  string    `json:"reason"`
				} `json:"changes"`
				Holdings []holding `json:"holdings"`
				Writers  []string  `json:"writers"`
				Hosts    []string  `json:"hosts"`
				Records  int       `json:"records"`
				Head     struct {
					Seq  uint64 `json:"seq"`
					Hash string `json:"hash"`
				} `json:"head"`
				Verified bool `json:"verified"`
			}
			if err := c.get(&o, "/v1/incident/report?"+q.Encode(), &rep); err != nil {
				return err
			}
			return o.printWith(cmd.OutOrStdout(), rep, func(w io.Writer) {
				state := "VERIFIED"
				if !rep.Verified {
					state = "NOT VERIFIED (run coffer audit verify)"
				}
				fmt.Fprintf(w, "Secret %s: %d audit records, chain %s up to %d:%s\n", rep.Secret, rep.Records, state, rep.Head.Seq, rep.Head.Hash)
				fmt.Fprintf(w, "\nKnew a value (wrote it): %s\nHosts sent a value (root there could read it): %s\n", list(rep.Writers), list(rep.Hosts))
				fmt.Fprintf(w, "\nChanges:\n")
				rows := [][]string{}
				for _, ch := range rep.Changes {
					rows = append(rows, []string{fmt.Sprint(ch.Seq), ch.Time.Format(time.RFC3339), ch.Actor, ch.Action, ch.Result, ch.Version, ch.Reason})
				}
				if len(rows) > 0 {
					o.print(w, nil, []string{"  SEQ", "TIME", "ACTOR", "ACTION", "RESULT", "VERSION", "REASON"}, indent(rows))
				}
				fmt.Fprintf(w, "\nHeld by:\n")
				if len(rep.Holdings) > 0 {
					o.print(w, nil, holdingHeader, indent(holdingRows(rep.Holdings)))
				}
			})
		},
	}
	cmd.Flags().StringVar(&name, "secret", "", "the secret (required)")
	cmd.Flags().StringVar(&since, "since", "", "from this time (RFC 3339, or a duration back from now: 72h)")
	cmd.Flags().StringVar(&until, "until", "", "until this time (RFC 3339, or a duration back from now)")
	o.flag(cmd)
	return cmd
}

func list(xs []string) string {
	if len(xs) == 0 {
		return "none"
	}
	return strings.Join(xs, ", ")
}

// parseWhen reads an RFC 3339 time, or a duration back from now ("72h").
func parseWhen(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time (2026-12-01T10:00:00Z) or a duration back from now (72h)", s)
	}
	return time.Now().Add(-d), nil
}
