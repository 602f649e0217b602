package cli

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"coffer/internal/policy"
)

func newBindCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bind",
		Short: "Bind secrets to containers by label selector (and image, and host)",
	}
	cmd.AddCommand(newBindCreateCmd(c), newBindUpdateCmd(c), newBindShowCmd(c), newBindLsCmd(c), newBindRmCmd(c), newBindTestCmd(c))
	return cmd
}

// bindFlags are the fields of a binding as flags.
type bindFlags struct {
	b    binding
	mode string
}

func (f *bindFlags) add(fs *pflag.FlagSet, required string) {
	fs.StringVar(&f.b.Secret, "secret", "", "secret to deliver"+required)
	fs.StringVar(&f.b.Selector, "selector", "", "label selector"+required)
	fs.StringVar(&f.b.Image, "image", "", "image pattern: repository glob with optional :tag, or @sha256:digest ('**' for any repository; '' for any image)")
	fs.StringVar(&f.b.Hosts, "hosts", "", "label selector over the host's (agent's) labels ('': any host)")
	fs.StringVar(&f.b.File, "file", "", "file name under /run/secrets (default: the secret's last path element)")
	fs.StringVar(&f.mode, "mode", "", "file mode in octal: 0440, 440 or 0o440 (default 0400)")
	fs.IntVar(&f.b.UID, "uid", 0, "file owner uid")
	fs.IntVar(&f.b.GID, "gid", 0, "file group gid")
	fs.StringVar(&f.b.Rotation, "rotation", "", "what the process is told of a new version: file (default), signal:SIGHUP (or another reload signal), restart-process, none")
}

// parseMode sets the binding's mode from --mode, if given.
func (f *bindFlags) parseMode() error {
	if f.mode == "" {
		return nil
	}
	m, err := policy.ParseMode(f.mode)
	if err != nil {
		return usageError(fmt.Errorf("--mode: %w", err))
	}
	f.b.Mode = m
	return nil
}

// checkBinding validates b as the server will, so that a bad flag is a usage
// error before anything is sent.
func checkBinding(b binding) error {
	n := b.Binding
	if err := n.Normalize(); err != nil {
		return usageError(err)
	}
	return nil
}

const bindLong = `Every container whose labels match the selector (Kubernetes syntax:
app=web, env in (prod,staging), !debug, tier; comma = and), whose image, if
given, matches --image (repository glob, :tag, or @sha256:digest), and whose
host, if given, matches --hosts (a selector over the labels an admin gave the
host's agent at enrollment) receives the secret as a file under
/run/secrets/. Running containers that match receive it at once.

The selector sees the container's own labels (docker run --label), not its
image's. Keys under the reserved prefix image.label/ name the image's labels
instead (image.label/app=payments); container labels with that prefix are
ignored. Image labels are chosen by the image's author, so a selector that uses
them needs an --image that names the images it trusts: a digest, or a literal
registry and first path segment (registry.example.com/team/*, not ** or **/app).
A lone '*' is refused: by Docker's naming it would mean docker.io/library/*,
official images only; leave --image out for any image, or give '**'.

--rotation says what the container's process is told when the secret
rotates: file (the default: the file is swapped in place, the process reads
it when it wants), signal:SIGHUP (the file is swapped, then the container's
main process gets the signal through the runtime; reload signals only),
restart-process (the file is swapped; coffer exec --restart-on-change in the
container restarts its child with the new environment), none (a running
container keeps the version it was first given; revocation still removes
it). See docs/consumers.md.`

func newBindCreateCmd(c *conn) *cobra.Command {
	var f bindFlags
	var overwrite, dry bool
	var templateFile string
	var o output
	cmd := &cobra.Command{
		Use:   "create NAME --secret S --selector SEL",
		Short: "Create a binding (refused if the name exists: see bind update, or --overwrite)",
		Long: "Create a binding. " + bindLong + `

A binding of that name that exists already is left alone and the command
fails: change it with coffer bind update, or replace it whole with
--overwrite (which shows what changed). --dry-run shows the binding and which
running containers would gain or lose which secret, and changes nothing.`,
		Example: `  coffer bind create web-db --secret payments/db-password --selector 'app=web,env in (prod,staging)' --hosts 'env=prod'
  coffer bind create api-key --secret payments/api-key --selector app=api --image 'registry.example.com/api:*' --file key --mode 0440 --gid 1000
  coffer bind create pay-img --secret payments/api-key --selector 'image.label/app=payments' --image 'registry.example.com/pay/*'
  coffer bind create web-tls --secret web/tls-key --selector app=nginx --file tls.key --rotation signal:SIGHUP
  coffer bind create web-db --secret payments/db-password --selector app=web --dry-run
  coffer bind create web-db --secret payments/db-password --selector app=web --overwrite
  coffer bind create web-dsn --template-file dsn.tmpl --selector app=web --file db.url`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			f.b.Name = args[0]
			if templateFile != "" && f.b.Secret == "" {
				f.b.Secret = f.b.Name // the templated secret the binding delivers
			}
			if f.b.Secret == "" || f.b.Selector == "" {
				return usageError(fmt.Errorf("--secret and --selector are required"))
			}
			if err := f.parseMode(); err != nil {
				return err
			}
			if err := checkBinding(f.b); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			if templateFile != "" {
				if err := putTemplateFile(cl, f.b.Secret, templateFile, dry); err != nil {
					return err
				}
			}
			path := "/v1/bindings/" + escapePath(f.b.Name)
			put := cl
			if !overwrite {
				put = cl.withHeader("If-None-Match", "*")
			}
			w := cmd.OutOrStdout()
			if dry {
				var p bindingPlan
				if err := put.do("PUT", path+"?dry_run=true", f.b, &p); err != nil {
					return existsHint(err, f.b.Name)
				}
				return o.printWith(w, p, func(w io.Writer) { printBindingPlan(w, p, true) })
			}
			var old *binding
			if overwrite {
				var b binding
				switch err := cl.do("GET", path, nil, &b); {
				case err == nil:
					old = &b
				case answeredStatus(err) != 404:
					return err
				}
			}
			var out binding
			if err := put.do("PUT", path, f.b, &out); err != nil {
				return existsHint(err, f.b.Name)
			}
			return o.printWith(w, out, func(w io.Writer) {
				if old == nil {
					fmt.Fprintf(w, "binding %s created: %s\n", out.Name, summary(out))
					return
				}
				fmt.Fprintf(w, "binding %s replaced:\n", out.Name)
				for _, l := range diff(*old, out) {
					fmt.Fprintln(w, "    "+l)
				}
			})
		},
	}
	f.add(cmd.Flags(), " (required)")
	cmd.Flags().BoolVar(&overwrite, "overwrite", false, "replace a binding of that name if there is one (shows the diff)")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show what would change and which running containers would gain or lose which secret; change nothing")
	cmd.Flags().StringVar(&templateFile, "template-file", "", "render the file from this text/template over other secrets (stored as the templated secret --secret, default: the binding's name; see coffer secret template)")
	o.flag(cmd)
	return cmd
}

func existsHint(err error, name string) error {
	return withHint(err, 409, fmt.Sprintf("coffer bind update %s changes it; coffer bind create %s --overwrite replaces it; coffer bind show %s shows it", name, name, name))
}

func newBindUpdateCmd(c *conn) *cobra.Command {
	var f bindFlags
	var dry bool
	var o output
	cmd := &cobra.Command{
		Use:   "update NAME [--selector SEL] [--secret S] [--image P] [--hosts SEL] [--file F] [--mode M] [--uid N] [--gid N] [--rotation R]",
		Short: "Change some fields of an existing binding, and show the diff",
		Long: `Change the fields given as flags of an existing binding, keep the others,
and show what changed. An empty value clears --image ('': any image) or
--hosts ('': any host). It fails if there is no such binding (coffer bind
create makes one). --dry-run shows the diff and which running containers
would gain or lose which secret, and changes nothing.

` + bindLong,
		Example: `  coffer bind update web-db --selector 'app=web,env=prod'
  coffer bind update web-db --mode 0440 --gid 1000
  coffer bind update web-db --hosts '' --dry-run`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			name := args[0]
			changed := false
			for _, fl := range []string{"secret", "selector", "image", "hosts", "file", "mode", "uid", "gid", "rotation"} {
				changed = changed || cmd.Flags().Changed(fl)
			}
			if !changed {
				return usageError(fmt.Errorf("nothing to change: give at least one of --secret, --selector, --image, --hosts, --file, --mode, --uid, --gid, --rotation"))
			}
			if err := f.parseMode(); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			path := "/v1/bindings/" + escapePath(name)
			var old binding
			if err := cl.do("GET", path, nil, &old); err != nil {
				return withHint(err, 404, fmt.Sprintf("coffer bind create %s makes it", name))
			}
			b := old
			set := func(fl string, apply func()) {
				if cmd.Flags().Changed(fl) {
					apply()
				}
			}
			set("secret", func() { b.Secret = f.b.Secret })
			set("selector", func() { b.Selector = f.b.Selector })
			set("image", func() { b.Image = f.b.Image })
			set("hosts", func() { b.Hosts = f.b.Hosts })
			set("file", func() { b.File = f.b.File })
			set("mode", func() { b.Mode = f.b.Mode })
			set("uid", func() { b.UID = f.b.UID })
			set("gid", func() { b.GID = f.b.GID })
			set("rotation", func() { b.Rotation = f.b.Rotation })
			if err := checkBinding(b); err != nil {
				return err
			}
			put := cl.withHeader("If-Match", "*")
			w := cmd.OutOrStdout()
			if dry {
				var p bindingPlan
				if err := put.do("PUT", path+"?dry_run=true", b, &p); err != nil {
					return err
				}
				return o.printWith(w, p, func(w io.Writer) { printBindingPlan(w, p, true) })
			}
			var out binding
			if err := put.do("PUT", path, b, &out); err != nil {
				return err
			}
			return o.printWith(w, out, func(w io.Writer) {
				if out == old {
					fmt.Fprintf(w, "binding %s: unchanged\n", name)
					return
				}
				fmt.Fprintf(w, "binding %s updated:\n", name)
				for _, l := range diff(old, out) {
					fmt.Fprintln(w, "    "+l)
				}
			})
		},
	}
	f.add(cmd.Flags(), "")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show the diff and which running containers would gain or lose which secret; change nothing")
	o.flag(cmd)
	return cmd
}

func describe(b policy.Binding) string {
	s := "containers with " + b.Selector
	if b.Image != "" {
		s += " and image " + b.Image
	}
	if b.Hosts != "" {
		s += " on hosts with " + b.Hosts
	}
	return s
}

func newBindShowCmd(c *conn) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a binding, and whether its secret exists",
		Example: `  coffer bind show web-db
  coffer bind show web-db -o json`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var b binding
			if err := c.get(&o, "/v1/bindings/"+escapePath(args[0]), &b); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if o.structured() {
				return o.print(w, b, nil, nil)
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			st := statuses(cl)
			fmt.Fprintf(w, "Name:        %s\nSecret:      %s (%s)\nSelector:    %s\nImage:       %s\nHosts:       %s\nFile:        /run/secrets/%s\nMode:        %s\nOwner:       uid %d, gid %d\nRotation:    %s\nManaged by:  %s\n",
				b.Name, b.Secret, st(b.Secret), b.Selector, anyIfEmpty(b.Image, "any image"), anyIfEmpty(b.Hosts, "any host"),
				b.File, policy.FormatMode(b.Mode), b.UID, b.GID, rotationHelp(b.Rotation), dash(b.ManagedBy))
			return nil
		},
	}
	o.flag(cmd)
	return cmd
}

func anyIfEmpty(s, none string) string {
	if s == "" {
		return "- (" + none + ")"
	}
	return s
}

// statuses returns a function saying of a secret name "ok", "secret
// deleted" or "secret missing", from one listing of the live and deleted
// secrets ("unknown" if they cannot be listed).
func statuses(cl *client) func(string) string {
	var live, deleted []secretMeta
	if cl.do("GET", "/v1/secrets", nil, &live) != nil || cl.do("GET", "/v1/secrets?deleted=true", nil, &deleted) != nil {
		return func(string) string { return "unknown" }
	}
	state := map[string]string{}
	for _, m := range deleted {
		state[m.Name] = "secret deleted"
	}
	for _, m := range live {
		state[m.Name] = "ok"
	}
	return func(name string) string {
		if s, ok := state[name]; ok {
			return s
		}
		return "secret missing"
	}
}

func newBindLsCmd(c *conn) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:   "ls",
		Short: "List bindings; STATUS says whether each one's secret exists",
		Long: `List bindings. STATUS is ok when the binding's secret exists, "secret
missing" when there is no such secret (the binding delivers nothing until it
is stored), "secret deleted" when it is deleted (coffer secret undelete).`,
		Example: "  coffer bind ls\n  coffer bind ls -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			var bs []binding
			if err := c.get(&o, "/v1/bindings", &bs); err != nil {
				return err
			}
			if o.structured() {
				return o.print(cmd.OutOrStdout(), bs, nil, nil)
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			st := statuses(cl)
			restarts := restartsPending(cl, bs)
			rows := [][]string{}
			for _, b := range bs {
				rows = append(rows, []string{b.Name, b.Secret, st(b.Secret), b.Selector, dash(b.Image), dash(b.Hosts), b.File,
					policy.FormatMode(b.Mode), fmt.Sprintf("%d:%d", b.UID, b.GID), rotationCell(b, restarts)})
			}
			return o.print(cmd.OutOrStdout(), bs, []string{"NAME", "SECRET", "STATUS", "SELECTOR", "IMAGE", "HOSTS", "FILE", "MODE", "OWNER", "ROTATION"}, rows)
		},
	}
	o.flag(cmd)
	return cmd
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newBindRmCmd(c *conn) *cobra.Command {
	var dry bool
	var o output
	cmd := &cobra.Command{
		Use:   "rm NAME",
		Short: "Delete a binding; its file disappears from the containers it served",
		Example: `  coffer bind rm web-db
  coffer bind rm web-db --dry-run`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.check(); err != nil {
				return err
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			path := "/v1/bindings/" + escapePath(args[0])
			w := cmd.OutOrStdout()
			if dry {
				var p bindingPlan
				if err := cl.do("DELETE", path+"?dry_run=true", nil, &p); err != nil {
					return err
				}
				return o.printWith(w, p, func(w io.Writer) { printBindingPlan(w, p, true) })
			}
			if err := cl.do("DELETE", path, nil, nil); err != nil {
				return err
			}
			return o.printWith(w, map[string]any{"name": args[0], "deleted": true}, func(w io.Writer) {
				fmt.Fprintf(w, "binding %s: deleted\n", args[0])
			})
		},
	}
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show which running containers would lose which secret; change nothing")
	o.flag(cmd)
	return cmd
}

// explanation is POST /v1/evaluate?explain=true.
type explanation struct {
	Granted  []policy.Grant `json:"granted"`
	Shadowed []struct {
		policy.Grant
		By string `json:"by"`
	} `json:"shadowed"`
	Unmatched []struct {
		Binding string `json:"binding"`
		Secret  string `json:"secret"`
		Reason  string `json:"reason"`
	} `json:"unmatched"`
	UnmatchedTotal int `json:"unmatched_total"`
}

func newBindTestCmd(c *conn) *cobra.Command {
	var o output
	var labels, hostLabels, imageLabels, image, digest string
	var explain bool
	cmd := &cobra.Command{
		Use:   "test --labels k=v,... [--host-labels k=v,...] [--image-labels k=v,...] [--image REF]",
		Short: "Show which secrets a container with these labels and image would get on a host with these labels, and why",
		Long: `Show which secrets a container would get: --labels are its own labels,
--image-labels its image's labels (what image.label/ keys in selectors see),
--host-labels the labels of the host's agent. Without --host-labels the host
has no labels, so bindings whose host selector requires one do not match.

It also shows the grants an override hid (a binding with a smaller name got
the same file), and, when nothing matched or with --explain, why each other
binding did not match: the first selector requirement, image pattern or host
requirement it fails, near misses first. -o json prints the grants, or with
--explain the whole explanation.`,
		Example: `  coffer bind test --labels app=web,env=prod --image registry/x:1.2
  coffer bind test --labels app=web --host-labels env=prod,zone=eu-1
  coffer bind test --image-labels app=payments --image registry.example.com/pay/api:1.2
  coffer bind test --labels app=web --explain
  coffer bind test --labels app=web -o json`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			lm, err := parseLabels(labels)
			if err != nil {
				return usageError(err)
			}
			hm, err := policy.ParseLabels(hostLabels)
			if err != nil {
				return usageError(fmt.Errorf("--host-labels: %w", err))
			}
			im, err := policy.ParseLabels(imageLabels)
			if err != nil {
				return usageError(fmt.Errorf("--image-labels: %w", err))
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			req := map[string]any{"labels": lm, "host_labels": hm, "image_labels": im, "image": image, "image_digest": digest}
			w := cmd.OutOrStdout()
			if o.structured() && !explain {
				var gs []policy.Grant
				if err := cl.do("POST", "/v1/evaluate", req, &gs); err != nil {
					return err
				}
				return o.print(w, gs, nil, nil)
			}
			var ex explanation
			if err := cl.do("POST", "/v1/evaluate?explain=true", req, &ex); err != nil {
				return err
			}
			if o.structured() {
				return o.print(w, ex, nil, nil)
			}
			printExplanation(w, ex, explain)
			return nil
		},
	}
	cmd.Flags().StringVar(&labels, "labels", "", "container labels, k=v,k2=v2")
	cmd.Flags().StringVar(&hostLabels, "host-labels", "", "labels of the host's agent, k=v,k2=v2 (default: none)")
	cmd.Flags().StringVar(&imageLabels, "image-labels", "", "labels of the container's image, k=v,k2=v2 (default: none)")
	cmd.Flags().StringVar(&image, "image", "", "container image reference")
	cmd.Flags().StringVar(&digest, "image-digest", "", "container image digest (sha256:...)")
	cmd.Flags().BoolVar(&explain, "explain", false, "say why every other binding does not match, even when some do")
	o.flag(cmd)
	return cmd
}

func printExplanation(w io.Writer, ex explanation, all bool) {
	if len(ex.Granted) == 0 {
		fmt.Fprintln(w, "No binding gives this container a secret.")
	} else {
		rows := [][]string{}
		for _, g := range ex.Granted {
			rows = append(rows, []string{g.Secret, "/run/secrets/" + g.File, g.Binding})
		}
		(&output{format: "table"}).print(w, nil, []string{"SECRET", "FILE", "BINDING"}, rows)
	}
	if len(ex.Shadowed) > 0 {
		fmt.Fprintln(w, "\nHidden by an override (a binding with a smaller name got the same file):")
		for _, s := range ex.Shadowed {
			by := s.By
			if by == "" {
				by = "a binding outside your token's scope"
			}
			fmt.Fprintf(w, "  %s: %s → /run/secrets/%s, hidden by %s\n", s.Binding, s.Secret, s.File, by)
		}
	}
	if len(ex.Granted) > 0 && !all || len(ex.Unmatched) == 0 {
		return
	}
	fmt.Fprintf(w, "\nWhy the other bindings do not match (%d):\n", ex.UnmatchedTotal)
	limit := len(ex.Unmatched)
	if !all && limit > 20 {
		limit = 20
	}
	for _, u := range ex.Unmatched[:limit] {
		fmt.Fprintf(w, "  %s (%s): %s\n", u.Binding, u.Secret, u.Reason)
	}
	if more := ex.UnmatchedTotal - limit; more > 0 {
		fmt.Fprintf(w, "  ... and %d more%s\n", more, map[bool]string{true: "", false: " (--explain shows up to 100)"}[all])
	}
}

func parseLabels(s string) (map[string]string, error) {
	m := map[string]string{}
	if strings.TrimSpace(s) == "" {
		return m, nil
	}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("--labels: %q is not key=value", kv)
		}
		m[k] = strings.TrimSpace(v)
	}
	return m, nil
}
