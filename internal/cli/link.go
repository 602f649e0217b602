package cli

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
)

// link is a linked secret's origin, as the server shows it.
type link struct {
	From      string    `json:"from"`
	Upstream  string    `json:"upstream"`
	Item      string    `json:"item"`
	Key       string    `json:"key,omitempty"`
	Dynamic   bool      `json:"dynamic,omitempty"` // a lease per container (type vault-dynamic)
	Revoked   string    `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// linkStatus is where a linked secret stands with its upstream.
type linkStatus struct {
	State   string    `json:"state"`
	Checked time.Time `json:"checked,omitzero"`
	Error   string    `json:"error,omitempty"`
}

func newSecretLinkCmd(c *conn) *cobra.Command {
	var from string
	var dry bool
	var o output
	cmd := &cobra.Command{
		Use:   "link NAME --from UPSTREAM:ITEM[#KEY]",
		Short: "Link a secret to an item of an upstream keystore (Vault, AWS, Azure, CyberArk)",
		Long: `Link a secret to an item of an upstream keystore the server is configured
with (its keystores: section; coffer keystore ls lists them). The upstream
stays the source of truth: the server reads the item now (nothing changes
if it cannot), delivers it like any secret to the containers bound to NAME,
follows every change upstream into the running containers, and removes it
from them if the upstream deletes or disables the item or stops letting
Coffer read it. An upstream that is merely unreachable removes nothing.

The reference is UPSTREAM:ITEM[#KEY]: UPSTREAM a configured upstream's name,
ITEM in that upstream's terms (Vault: a path under its KV v2 mount; AWS: a
secret name or ARN; Azure: a secret name; Conjur: a variable id; CyberArk
CCP: Safe/Object), and #KEY one key of a JSON-shaped item.

Linking an existing linked secret to another item relinks it (a new
version). A stored secret cannot be linked (coffer secret rm --purge it
first), and a linked one cannot be put to: change it upstream.`,
		Example: `  coffer secret link payments/db-password --from vault:payments/db#password
  coffer secret link payments/api-key --from aws:prod/payments/api-key
  coffer secret link payments/tls --from azure:payments-tls --dry-run`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkSecretArg(&o, name); err != nil {
				return err
			}
			if from == "" {
				return usageError(fmt.Errorf("--from UPSTREAM:ITEM[#KEY] is required"))
			}
			return c.writeSecret(cmd, &o, "PUT", "/v1/links/"+escapePath(name), dry, map[string]string{"from": from}, nil, func(w io.Writer, m secretMeta) {
				up := ""
				if len(m.Versions) > 0 {
					up = m.Versions[0].Upstream
				}
				fmt.Fprintf(w, "%s: linked to %s, version %d (upstream version %s)\n", m.Name, m.Link.From, m.Current, up)
			})
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the upstream item: UPSTREAM:ITEM[#KEY]")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "read and check the item, show which running containers would get it; change nothing")
	o.flag(cmd)
	return cmd
}

func newSecretUnlinkCmd(c *conn) *cobra.Command {
	var dry bool
	var o output
	cmd := &cobra.Command{
		Use:   "unlink NAME",
		Short: "Remove a linked secret: it disappears from every container at once (the upstream item is untouched)",
		Long: `Remove a linked secret at once, as coffer secret rm --purge removes a stored
one: every container bound to it loses the file, and the server forgets the
value it held. The upstream item is not touched. The name can then be
linked again or stored.`,
		Example: `  coffer secret unlink payments/db-password
  coffer secret unlink payments/db-password --dry-run`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkSecretArg(&o, name); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			path := "/v1/links/" + escapePath(name)
			w := cmd.OutOrStdout()
			if dry {
				var p secretPlan
				if err := cl.do("DELETE", path+dryRunQuery(true, "?"), nil, &p); err != nil {
					return err
				}
				return o.printWith(w, p, func(w io.Writer) { printSecretPlan(w, p) })
			}
			if err := cl.do("DELETE", path, nil, nil); err != nil {
				return err
			}
			res := struct {
				Name     string `json:"name"`
				Unlinked bool   `json:"unlinked"`
			}{name, true}
			return o.printWith(w, res, func(w io.Writer) { fmt.Fprintf(w, "%s: unlinked and removed from every container\n", name) })
		},
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show which running containers would lose it; change nothing")
	o.flag(cmd)
	return cmd
}

// upstreamStatus is one configured upstream keystore's health.
type upstreamStatus struct {
	Name     string    `json:"name"`
	State    string    `json:"state"`
	Checked  time.Time `json:"checked,omitzero"`
	Error    string    `json:"error,omitempty"`
	Degraded int       `json:"degraded_items,omitempty"`
	Linked   int       `json:"linked_items"`
}

func newKeystoreCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keystore",
		Short: "The upstream keystores the server brokers (configured in its keystores: section)",
	}
	var o output
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the configured upstream keystores and their health",
		Long: `List the upstream keystores the server is configured with, how many items
linked secrets use in each, when each was last checked, and whether it is
degraded (unreachable, throttling, refusing Coffer's credentials, or items
that cannot be read): containers then keep the last value they got.`,
		Example: `  coffer keystore ls
  coffer keystore ls -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ups []upstreamStatus
			if err := c.get(&o, "/v1/keystores", &ups); err != nil {
				return err
			}
			rows := [][]string{}
			for _, u := range ups {
				checked := "never"
				if !u.Checked.IsZero() {
					checked = u.Checked.Format(time.RFC3339)
				}
				rows = append(rows, []string{u.Name, u.State, fmt.Sprint(u.Linked), checked, u.Error})
			}
			return o.print(cmd.OutOrStdout(), ups, []string{"UPSTREAM", "STATE", "LINKED", "CHECKED", "ERROR"}, rows)
		},
	}
	o.flag(ls)
	cmd.AddCommand(ls)
	return cmd
}
