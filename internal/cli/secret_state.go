package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"time"

	"github.com/spf13/cobra"
)

func newSecretRmCmd(c *conn) *cobra.Command {
	var purge, dry bool
	var o output
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a secret (restorable with undelete until it is purged); it disappears from every container at once",
		Long: `Delete a secret. Every container bound to it loses the file at once. The
deletion can be undone: its versions stay sealed on the server for the
server's deleted_retention (default 7 days), during which coffer secret
undelete NAME brings it back as it was and coffer secret ls --deleted lists
it; then the server destroys them.

--purge destroys the secret, live or already deleted, at once: every
version, no undelete. --dry-run shows which running containers would lose
it and changes nothing.`,
		Example: `  coffer secret rm payments/old-api-key
  coffer secret rm payments/old-api-key --dry-run
  coffer secret rm payments/leaked-key --purge`,
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
			path := "/v1/secrets/" + escapePath(name)
			q := "?"
			if purge {
				path += "?purge=true"
				q = "&"
			}
			w := cmd.OutOrStdout()
			if dry {
				var p secretPlan
				if err := cl.do("DELETE", path+dryRunQuery(true, q), nil, &p); err != nil {
					return err
				}
				return o.printWith(w, p, func(w io.Writer) { printSecretPlan(w, p) })
			}
			if err := cl.do("DELETE", path, nil, nil); err != nil {
				return err
			}
			res := struct {
				Name       string    `json:"name"`
				Purged     bool      `json:"purged"`
				PurgeAfter time.Time `json:"purge_after,omitzero"`
			}{Name: name, Purged: purge}
			if !purge {
				var del []secretMeta
				if cl.do("GET", "/v1/secrets?deleted=true&prefix="+queryEscape(name), nil, &del) == nil {
					for _, m := range del {
						if m.Name == name {
							res.PurgeAfter = m.PurgeAfter
						}
					}
				}
			}
			return o.printWith(w, res, func(w io.Writer) {
				switch {
				case purge:
					fmt.Fprintf(w, "%s: purged: every version destroyed\n", name)
				case !res.PurgeAfter.IsZero():
					fmt.Fprintf(w, "%s: deleted; coffer secret undelete %s restores it until %s\n", name, name, res.PurgeAfter.Format(time.RFC3339))
				default:
					fmt.Fprintf(w, "%s: deleted; coffer secret undelete %s restores it until it is purged\n", name, name)
				}
			})
		},
	}
	cmd.Flags().BoolVar(&purge, "purge", false, "destroy the secret and every version now, whether it is live or already deleted (no undelete)")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show which running containers would lose it; change nothing")
	o.flag(cmd)
	return cmd
}

func newSecretUndeleteCmd(c *conn) *cobra.Command {
	var dry bool
	var o output
	cmd := &cobra.Command{
		Use:   "undelete NAME",
		Short: "Restore a deleted secret with its versions; containers bound to it get it back",
		Long: `Restore a deleted secret as it was, with the same versions. The running
containers its bindings select receive its current version again. It fails
(and changes nothing) for a secret that is not deleted, or that was purged
(--purge, or its retention ended): its values are gone.`,
		Example: `  coffer secret ls --deleted
  coffer secret undelete payments/db-password
  coffer secret undelete payments/db-password --dry-run`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkSecretArg(&o, name); err != nil {
				return err
			}
			hint := func(err error) error {
				return withHint(err, 404, "see coffer secret ls --deleted for what can be restored")
			}
			return c.writeSecret(cmd, &o, "POST", "/v1/undelete/"+escapePath(name), dry, nil, hint, func(w io.Writer, m secretMeta) {
				fmt.Fprintf(w, "%s: restored at version %d\n", m.Name, m.Current)
			})
		},
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show which running containers would get it back; change nothing")
	o.flag(cmd)
	return cmd
}

func newSecretRollbackCmd(c *conn) *cobra.Command {
	var to uint64
	var dry bool
	var o output
	cmd := &cobra.Command{
		Use:   "rollback NAME --to VERSION",
		Short: "Store a new version whose value is a kept version's, copied on the server",
		Long: `Roll a secret back: store a new version whose value is that of version
--to, copied inside the server (values are never shown, not even for this).
The running containers bound to it receive the new version at once, as for
a put; coffer rollout status NAME waits for them. coffer secret show NAME
lists the kept versions; one pruned beyond the server's max_versions, or
destroyed by a purge, cannot be restored.`,
		Example: `  coffer secret show payments/db-password
  coffer secret rollback payments/db-password --to 6
  coffer secret rollback payments/db-password --to 6 --dry-run`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkSecretArg(&o, name); err != nil {
				return err
			}
			if to == 0 {
				return usageError(errors.New("--to VERSION is required (a kept version: see coffer secret show " + name + ")"))
			}
			return c.writeSecret(cmd, &o, "POST", "/v1/rollback/"+escapePath(name), dry, map[string]uint64{"to": to}, nil, func(w io.Writer, m secretMeta) {
				fmt.Fprintf(w, "%s: version %d stored, a copy of version %d\n", m.Name, m.Current, to)
			})
		},
	}
	cmd.Flags().Uint64Var(&to, "to", 0, "the kept version to roll back to (required)")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "check, and show which running containers would rotate; store nothing")
	o.flag(cmd)
	return cmd
}

// watchSecret shows the secret at path again each time it changes, until
// Ctrl-C (or the command's context ends). A missing secret or an
// unreachable server is shown, and watching goes on; an authentication or
// authorization failure ends it.
func watchSecret(cmd *cobra.Command, c *conn, o *output, path string, interval time.Duration) error {
	if err := o.check(); err != nil {
		return err
	}
	if interval < 100*time.Millisecond {
		return usageError(fmt.Errorf("--interval %s: at least 100ms", interval))
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(cmdContext(cmd), os.Interrupt)
	defer stop()
	w := cmd.OutOrStdout()
	tty := isTerminal(w)
	var last []byte
	for {
		var m secretMeta
		var buf bytes.Buffer
		err := cl.do("GET", path, nil, &m)
		switch code := answeredStatus(err); {
		case code == 401 || code == 403:
			return err
		case err != nil:
			fmt.Fprintf(&buf, "%s\n", err)
		default:
			showSecret(&buf, o, m)
		}
		if !bytes.Equal(buf.Bytes(), last) {
			last = bytes.Clone(buf.Bytes())
			switch {
			case o.structured():
			case tty:
				io.WriteString(w, "\033[H\033[2J") // clear the screen: the newest state only
			default:
				fmt.Fprintf(w, "--- %s\n", time.Now().Format(time.RFC3339))
			}
			w.Write(buf.Bytes())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

func cmdContext(cmd *cobra.Command) context.Context {
	if ctx := cmd.Context(); ctx != nil {
		return ctx
	}
	return context.Background()
}
