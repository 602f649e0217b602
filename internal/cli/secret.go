package cli

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"coffer/internal/secret"
)

type secretMeta struct {
	Name     string    `json:"name"`
	Current  uint64    `json:"current_version"`
	Created  time.Time `json:"created"`
	Updated  time.Time `json:"updated"`
	Versions []struct {
		Version    uint64    `json:"version"`
		Created    time.Time `json:"created"`
		Author     string    `json:"author"`
		RollbackOf uint64    `json:"rollback_of,omitempty"`
		Upstream   string    `json:"upstream_version,omitempty"`
	} `json:"versions"`
	Deleted    time.Time `json:"deleted,omitzero"`
	PurgeAfter time.Time `json:"purge_after,omitzero"`
	Link       *link     `json:"link,omitempty"`
	Template   *struct {
		Source string   `json:"source"`
		Inputs []string `json:"inputs"`
		Broken string   `json:"broken,omitempty"`
	} `json:"template,omitempty"`
	LinkStatus *linkStatus `json:"link_status,omitempty"`
	Holders    []holder    `json:"holders"`
	Pending    int         `json:"pending"`
}

// holder is one running container's state for a secret.
type holder struct {
	Agent         string `json:"agent"`
	ContainerID   string `json:"container_id"`
	ContainerName string `json:"container_name"`
	Rotation      string `json:"rotation,omitempty"` // the binding's contract; "" = file
	Version       uint64 `json:"version"`
	Pending       bool   `json:"pending"`
	Upstream      string `json:"upstream_version,omitempty"`

	Process *holderProcess `json:"process,omitempty"` // what its process runs with (process.go)
}

func newSecretCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "secret",
		Short: "Put or link, list, show, roll back, delete and restore secrets (values are write-only)",
	}
	cmd.AddCommand(newSecretPutCmd(c), newSecretLsCmd(c), newSecretShowCmd(c), newSecretRollbackCmd(c),
		newSecretRmCmd(c), newSecretUndeleteCmd(c), newSecretLinkCmd(c), newSecretUnlinkCmd(c), newSecretTemplateCmd(c))
	return cmd
}

func newSecretPutCmd(c *conn) *cobra.Command {
	var fromFile, alphabet string
	var generate int
	var dry bool
	var o output
	cmd := &cobra.Command{
		Use:   "put NAME",
		Short: "Store a new version of a secret",
		Long: `Store a new version of a secret. The value comes from standard input (not
from an argument, which would land in shell history and ps), from --from-file,
or is generated on the server with --generate N and never shown to anyone.
Running containers bound to the secret receive the new version at once
(coffer rollout status NAME waits for them). A put to a deleted secret
restores it, with its versions, and adds the new one.

--dry-run sends the value to be checked (size, encoding), stores nothing,
and lists the running containers that would receive the new version.
-o json prints the secret's metadata (never the value), e.g. to read the
new version number in a script.`,
		Example: `  printf %s "$DB_PASSWORD" | coffer secret put payments/db-password
  coffer secret put payments/tls-key --from-file key.pem
  coffer secret put payments/api-key --generate 40 --alphabet alnum
  coffer secret put payments/api-key --generate 40 -o json | jq .current_version
  coffer secret put payments/db-password --dry-run < new-password.txt`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkSecretArg(&o, name); err != nil {
				return err
			}
			if generate != 0 && fromFile != "" {
				return usageError(errors.New("--generate and --from-file exclude each other"))
			}
			body := map[string]any{}
			switch {
			case generate != 0:
				body["generate"] = map[string]any{"length": generate, "alphabet": alphabet}
			default:
				v, err := readValue(cmd.InOrStdin(), fromFile)
				if err != nil {
					return err
				}
				body["value"] = base64.StdEncoding.EncodeToString(v)
				v.Zero()
			}
			return c.writeSecret(cmd, &o, "PUT", "/v1/secrets/"+escapePath(name), dry, body, nil, func(w io.Writer, m secretMeta) {
				fmt.Fprintf(w, "%s: version %d stored\n", m.Name, m.Current)
			})
		},
	}
	cmd.Flags().StringVar(&fromFile, "from-file", "", "read the value from this file")
	cmd.Flags().IntVar(&generate, "generate", 0, "generate a random value of this length on the server")
	cmd.Flags().StringVar(&alphabet, "alphabet", "alnum", "alphabet for --generate: alnum, alpha, numeric, hex, base64url, printable")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "check and show what would happen (which running containers would get it); store nothing")
	o.flag(cmd)
	return cmd
}

// printWith prints v as JSON with -o json, else what human prints.
func (o *output) printWith(w io.Writer, v any, human func(io.Writer)) error {
	if o.structured() {
		return o.print(w, v, nil, nil)
	}
	human(w)
	return nil
}

// readValue reads a value from a file or stdin; a single trailing newline
// from stdin (echo) is dropped.
func readValue(stdin io.Reader, file string) (secret.Value, error) {
	const max = 64 << 20
	var r io.Reader = stdin
	if file != "" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	} else if f, ok := stdin.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			fmt.Fprintln(os.Stderr, "reading the value from the terminal; end with Ctrl-D")
		}
	}
	b, err := io.ReadAll(io.LimitReader(r, max+1))
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, fmt.Errorf("value larger than %d bytes", max)
	}
	if file == "" {
		if n := len(b); n > 0 && b[n-1] == '\n' {
			b = b[:n-1]
			if n := len(b); n > 0 && b[n-1] == '\r' {
				b = b[:n-1]
			}
		}
	}
	if len(b) == 0 {
		return nil, usageError(errors.New("empty value: give it on standard input, with --from-file or --generate"))
	}
	return secret.Value(b), nil
}

func newSecretLsCmd(c *conn) *cobra.Command {
	var o output
	var prefix string
	var deleted bool
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List secrets (metadata only); --deleted: the deleted ones that can be restored",
		Example: `  coffer secret ls
  coffer secret ls --prefix payments/ -o json
  coffer secret ls --deleted`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := "/v1/secrets?prefix=" + queryEscape(prefix)
			if deleted {
				path += "&deleted=true"
			}
			var ms []secretMeta
			if err := c.get(&o, path, &ms); err != nil {
				return err
			}
			rows := [][]string{}
			for _, m := range ms {
				if deleted {
					rows = append(rows, []string{m.Name, fmt.Sprint(m.Current), m.Deleted.Format(time.RFC3339), m.PurgeAfter.Format(time.RFC3339)})
				} else {
					from := "-"
					switch {
					case m.Link != nil:
						from = m.Link.From
						if m.Link.Revoked != "" {
							from += " (revoked)"
						}
					case m.Template != nil:
						from = fmt.Sprintf("template of %d secrets", len(m.Template.Inputs))
						if m.Template.Broken != "" {
							from += " (broken)"
						}
					}
					rows = append(rows, []string{m.Name, fmt.Sprint(m.Current), m.Updated.Format(time.RFC3339), from})
				}
			}
			header := []string{"NAME", "VERSION", "UPDATED", "FROM"}
			if deleted {
				header = []string{"NAME", "VERSION", "DELETED", "PURGED AFTER"}
			}
			return o.print(cmd.OutOrStdout(), ms, header, rows)
		},
	}
	cmd.Flags().StringVar(&prefix, "prefix", "", "only names starting with this")
	cmd.Flags().BoolVar(&deleted, "deleted", false, "list the deleted secrets that can still be restored (coffer secret undelete)")
	o.flag(cmd)
	return cmd
}

func newSecretShowCmd(c *conn) *cobra.Command {
	var o output
	var watch bool
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a secret's versions and which containers hold which version",
		Long: `Show a secret's metadata: its kept versions (who wrote each, when, and which
are rollbacks of which) and its rollout: every running container bound to
it, the version it holds, and how many have not yet acknowledged the
current version. Never the value.

--watch shows it again each time it changes (asking every --interval) until
Ctrl-C; with -o json, one JSON document per change.`,
		Example: `  coffer secret show payments/db-password
  coffer secret show payments/db-password -o json
  coffer secret show payments/db-password --watch`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/secrets/" + escapePath(args[0])
			if watch {
				return watchSecret(cmd, c, &o, path, interval)
			}
			var m secretMeta
			if err := c.get(&o, path, &m); err != nil {
				return err
			}
			return showSecret(cmd.OutOrStdout(), &o, m)
		},
	}
	cmd.Flags().BoolVarP(&watch, "watch", "w", false, "show it again on every change, until Ctrl-C")
	cmd.Flags().DurationVar(&interval, "interval", 500*time.Millisecond, "how often --watch asks the server (at least 100ms)")
	o.flag(cmd)
	return cmd
}

func showSecret(w io.Writer, o *output, m secretMeta) error {
	if o.structured() {
		return o.print(w, m, nil, nil)
	}
	fmt.Fprintf(w, "Name:     %s\nCurrent:  %d\nCreated:  %s\nUpdated:  %s\n", m.Name, m.Current, m.Created.Format(time.RFC3339), m.Updated.Format(time.RFC3339))
	if m.Link != nil {
		fmt.Fprintf(w, "Linked:   %s (upstream %s, item %q", m.Link.From, m.Link.Upstream, m.Link.Item)
		if m.Link.Key != "" {
			fmt.Fprintf(w, ", key %q", m.Link.Key)
		}
		if m.Link.Dynamic {
			fmt.Fprint(w, "; dynamic: each container gets its own lease")
		}
		fmt.Fprintln(w, ")")
		switch {
		case m.Link.Revoked != "":
			fmt.Fprintf(w, "State:    revoked at %s: %s\n", m.Link.RevokedAt.Format(time.RFC3339), m.Link.Revoked)
		case m.LinkStatus != nil && m.LinkStatus.Error != "":
			fmt.Fprintf(w, "State:    %s (containers keep the last value): %s\n", m.LinkStatus.State, m.LinkStatus.Error)
		case m.LinkStatus != nil && m.LinkStatus.Checked.IsZero():
			fmt.Fprintf(w, "State:    %s\n", m.LinkStatus.State)
		case m.LinkStatus != nil:
			fmt.Fprintf(w, "State:    %s, checked %s\n", m.LinkStatus.State, m.LinkStatus.Checked.Format(time.RFC3339))
		}
	}
	if m.Template != nil {
		fmt.Fprintf(w, "Template: rendered from %s\n", strings.Join(m.Template.Inputs, ", "))
		if m.Template.Broken != "" {
			fmt.Fprintf(w, "State:    cannot be rendered (in no container): %s\n", m.Template.Broken)
		}
	}
	fmt.Fprintf(w, "\nVersions:\n")
	rows := [][]string{}
	for _, v := range m.Versions {
		note := ""
		switch {
		case v.RollbackOf != 0:
			note = fmt.Sprintf("rollback to version %d", v.RollbackOf)
		case v.Upstream != "":
			note = "upstream version " + v.Upstream
		}
		rows = append(rows, []string{fmt.Sprint(v.Version), v.Created.Format(time.RFC3339), v.Author, note})
	}
	o.print(w, nil, []string{"  VERSION", "CREATED", "AUTHOR", "NOTE"}, indent(rows))
	fmt.Fprintf(w, "\nContainers: %d holding, %d pending\n", len(m.Holders), m.Pending)
	rows = [][]string{}
	for _, h := range m.Holders {
		state := "current" + rotationNote(h)
		if h.Pending {
			state = "pending" + rotationNote(h)
		}
		state += processNote(h)
		row := []string{h.Agent, h.ContainerName, short(h.ContainerID), fmt.Sprint(h.Version), state}
		if m.Link != nil {
			up := h.Upstream
			if up == "" {
				up = "-"
			}
			row = append(row[:4], up, state)
		}
		rows = append(rows, row)
	}
	header := []string{"  HOST", "CONTAINER", "ID", "VERSION", "STATE"}
	if m.Link != nil {
		header = []string{"  HOST", "CONTAINER", "ID", "VERSION", "UPSTREAM VERSION", "STATE"}
	}
	if m.Link != nil && m.Link.Dynamic {
		header[4] = "LEASE"
	}
	if len(rows) > 0 {
		o.print(w, nil, header, indent(rows))
	}
	return nil
}

func indent(rows [][]string) [][]string {
	for _, r := range rows {
		r[0] = "  " + r[0]
	}
	return rows
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func queryEscape(s string) string { return url.QueryEscape(s) }

// exactArgs is cobra.ExactArgs with a usage exit code.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usageError(fmt.Errorf("%s takes %d argument(s), got %d; see --help", cmd.CommandPath(), n, len(args)))
		}
		return nil
	}
}

// checkSecretArg checks what a secret command can check before it talks to
// the server: its -o format and the secret's name (both usage errors).
func checkSecretArg(o *output, name string) error {
	if err := o.check(); err != nil {
		return err
	}
	if err := secret.ValidateName(name); err != nil {
		return usageError(err)
	}
	return nil
}
