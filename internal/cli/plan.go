package cli

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"coffer/internal/policy"
)

// binding is a binding as the API answers it: the policy binding and who
// manages it.
type binding struct {
	policy.Binding
	ManagedBy string `json:"managed_by,omitempty"`
}

// effect is what a change would do to one file of one running container.
type effect struct {
	Agent         string `json:"agent"`
	ContainerID   string `json:"container_id"`
	ContainerName string `json:"container_name"`
	Change        string `json:"change"`
	Secret        string `json:"secret"`
	File          string `json:"file"`
	Binding       string `json:"binding"`
}

// secretPlan is the answer to a dry run of a change to a secret.
type secretPlan struct {
	DryRun     bool      `json:"dry_run"`
	Secret     string    `json:"secret"`
	Action     string    `json:"action"`
	State      string    `json:"state"`
	Version    uint64    `json:"version,omitempty"`
	From       uint64    `json:"from,omitempty"`
	To         uint64    `json:"to,omitempty"`
	Link       string    `json:"ref,omitempty"`
	Unchanged  bool      `json:"unchanged,omitempty"`
	PurgeAfter time.Time `json:"purge_after,omitzero"`
	Effects    []effect  `json:"effects"`
}

// bindingChange is one binding's change; Before nil: created, After nil: deleted.
type bindingChange struct {
	Before *binding `json:"before"`
	After  *binding `json:"after"`
}

// bindingPlan is what a change to bindings did or, for a dry run, would do.
type bindingPlan struct {
	DryRun         bool            `json:"dry_run"`
	Created        []binding       `json:"created"`
	Updated        []bindingChange `json:"updated"`
	Deleted        []binding       `json:"deleted"`
	Unchanged      []string        `json:"unchanged"`
	Effects        []effect        `json:"effects"`
	SecretsMissing []string        `json:"secrets_missing"`
}

const dryRunNote = "dry run: nothing was changed"

// printEffects lists what running containers would gain and lose.
func printEffects(w io.Writer, es []effect) {
	if len(es) == 0 {
		fmt.Fprintln(w, "Running containers: none affected")
		return
	}
	fmt.Fprintf(w, "Running containers (%d changes):\n", len(es))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  AGENT\tCONTAINER\tID\tCHANGE\tSECRET\tFILE\tBINDING")
	for _, e := range es {
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t/run/secrets/%s\t%s\n", e.Agent, e.ContainerName, short(e.ContainerID), e.Change, e.Secret, e.File, dash(e.Binding))
	}
	tw.Flush()
}

// printSecretPlan prints a secret dry run for people.
func printSecretPlan(w io.Writer, p secretPlan) {
	fmt.Fprintln(w, dryRunNote)
	switch p.Action {
	case "put":
		switch p.State {
		case "deleted":
			fmt.Fprintf(w, "%s: would be restored (it is deleted), its versions kept, with a new version %d\n", p.Secret, p.Version)
		case "absent":
			fmt.Fprintf(w, "%s: would be created at version %d\n", p.Secret, p.Version)
		default:
			fmt.Fprintf(w, "%s: version %d would be stored (now version %d)\n", p.Secret, p.Version, p.Version-1)
		}
	case "rollback":
		fmt.Fprintf(w, "%s: version %d would be stored, a copy of version %d (now version %d)\n", p.Secret, p.Version, p.To, p.From)
	case "delete":
		fmt.Fprintf(w, "%s: would be deleted, restorable with coffer secret undelete until %s\n", p.Secret, p.PurgeAfter.Format(time.RFC3339))
	case "purge":
		fmt.Fprintf(w, "%s: would be purged (%s now): every version destroyed, no undelete\n", p.Secret, p.State)
	case "undelete":
		fmt.Fprintf(w, "%s: would be restored at version %d\n", p.Secret, p.Version)
	case "link":
		if p.Unchanged {
			fmt.Fprintf(w, "%s: already linked to %s at its current upstream version; nothing would change\n", p.Secret, p.Link)
		} else {
			fmt.Fprintf(w, "%s: would be linked to %s, at version %d\n", p.Secret, p.Link, p.Version)
		}
	case "template":
		fmt.Fprintf(w, "%s: the template would be stored as version %d (%s now)\n", p.Secret, p.Version, p.State)
	case "unlink":
		fmt.Fprintf(w, "%s: would be unlinked from %s and removed from every container (%s now)\n", p.Secret, p.Link, p.State)
	}
	printEffects(w, p.Effects)
}

// printBindingPlan prints what a change to bindings did, or would do.
func printBindingPlan(w io.Writer, p bindingPlan, verbose bool) {
	would := func(done, would string) string {
		if p.DryRun {
			return would
		}
		return done
	}
	if p.DryRun {
		fmt.Fprintln(w, dryRunNote)
	}
	for _, b := range p.Created {
		fmt.Fprintf(w, "binding %s %s: %s\n", b.Name, would("created", "would be created"), summary(b))
	}
	for _, u := range p.Updated {
		fmt.Fprintf(w, "binding %s %s:\n", u.After.Name, would("updated", "would be updated"))
		for _, l := range diff(*u.Before, *u.After) {
			fmt.Fprintln(w, "    "+l)
		}
	}
	for _, b := range p.Deleted {
		fmt.Fprintf(w, "binding %s %s\n", b.Name, would("deleted", "would be deleted"))
	}
	if verbose {
		for _, n := range p.Unchanged {
			fmt.Fprintf(w, "binding %s unchanged\n", n)
		}
	} else if n := len(p.Unchanged); n > 0 {
		fmt.Fprintf(w, "%d binding(s) unchanged\n", n)
	}
	if len(p.Created)+len(p.Updated)+len(p.Deleted)+len(p.Unchanged) == 0 {
		fmt.Fprintln(w, "no bindings")
	}
	if p.DryRun {
		printEffects(w, p.Effects)
	}
	for _, s := range p.SecretsMissing {
		fmt.Fprintf(w, "note: secret %s does not exist: nothing is delivered until it does (coffer secret put %s)\n", s, s)
	}
}

// summary is a binding in one line.
func summary(b binding) string {
	return fmt.Sprintf("%s → /run/secrets/%s (mode %s, uid %d, gid %d%s) for %s", b.Secret, b.File, policy.FormatMode(b.Mode), b.UID, b.GID,
		rotationSummary(b.Rotation), describe(b.Binding))
}

// diff lists the fields that differ between two bindings, "field: old → new".
func diff(a, b binding) []string {
	var out []string
	field := func(name, x, y string) {
		if x != y {
			out = append(out, fmt.Sprintf("%s: %s → %s", name, dash(x), dash(y)))
		}
	}
	field("secret", a.Secret, b.Secret)
	field("selector", a.Selector, b.Selector)
	field("image", a.Image, b.Image)
	field("hosts", a.Hosts, b.Hosts)
	field("file", a.File, b.File)
	field("mode", policy.FormatMode(a.Mode), policy.FormatMode(b.Mode))
	field("uid", fmt.Sprint(a.UID), fmt.Sprint(b.UID))
	field("gid", fmt.Sprint(a.GID), fmt.Sprint(b.GID))
	field("rotation", policy.RotationName(a.Rotation), policy.RotationName(b.Rotation))
	field("managed_by", a.ManagedBy, b.ManagedBy)
	if len(out) == 0 {
		out = append(out, "(no change)")
	}
	return out
}

// withHeader returns a copy of cl that sends header k: v with every
// request.
func (cl *client) withHeader(k, v string) *client {
	cp := *cl
	hc := *cl.http
	hc.Transport = headerTransport{base: cl.http.Transport, k: k, v: v}
	cp.http = &hc
	return &cp
}

type headerTransport struct {
	base http.RoundTripper
	k, v string
}

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.k, h.v)
	return h.base.RoundTrip(r)
}

// answeredStatus returns the HTTP status of an error the server answered, or 0.
func answeredStatus(err error) int {
	var ae *apiError
	if errors.As(err, &ae) {
		return ae.Status
	}
	return 0
}

// dryRunQuery is the query string of a dry run, or "".
func dryRunQuery(dry bool, sep string) string {
	if dry {
		return sep + "dry_run=true"
	}
	return ""
}

// withHint adds advice to an error the server answered with status code,
// keeping the error (and its exit code) underneath.
func withHint(err error, code int, advice string) error {
	if answeredStatus(err) == code {
		return fmt.Errorf("%w\n%s", err, strings.TrimSpace(advice))
	}
	return err
}

// machine reports whether o asks for a machine-readable format (the API's
// answer as JSON, or YAML) rather than text for people.

// writeSecret sends a write to a secret that answers, for a dry run, a
// secretPlan (printed as such) and otherwise the secret's metadata, which
// done prints. hint, if set, may add advice to an error.
func (c *conn) writeSecret(cmd *cobra.Command, o *output, method, path string, dry bool, body any, hint func(error) error, done func(io.Writer, secretMeta)) error {
	cl, err := c.client()
	if err != nil {
		return err
	}
	w := cmd.OutOrStdout()
	if dry {
		var p secretPlan
		if err := cl.do(method, path+dryRunQuery(true, "?"), body, &p); err != nil {
			return err
		}
		return o.printWith(w, p, func(w io.Writer) { printSecretPlan(w, p) })
	}
	var m secretMeta
	if err := cl.do(method, path, body, &m); err != nil {
		if hint != nil {
			err = hint(err)
		}
		return err
	}
	return o.printWith(w, m, func(w io.Writer) { done(w, m) })
}
