package cli

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"
)

// defaultOwner is apply's ownership marker unless --owner says otherwise
// (the server's default too).
const defaultOwner = "coffer-apply"

func newApplyCmd(c *conn) *cobra.Command {
	var files []string
	var prune, dry, verbose bool
	var owner string
	var o output
	cmd := &cobra.Command{
		Use:   "apply -f FILE|DIR [-f ...] [--prune] [--dry-run]",
		Short: "Make the bindings what YAML files say: create, update and (with --prune) delete",
		Long: `Make the bindings what the files say, in one transaction on the server (all
of it or nothing): create those that do not exist, update those that
differ, leave the others alone. Running apply twice changes nothing the
second time. --dry-run shows the changes and which running containers would
gain or lose which secret, and changes nothing.

Files are YAML (a directory: its *.yaml and *.yml files, not recursively;
"-" is standard input), documents separated by ---:

  kind: Binding
  name: web-db
  secret: payments/db-password
  selector: app=web,env in (prod,staging)
  image: registry.example.com/web:*       # optional
  hosts: env=prod                         # optional
  file: db-password                       # optional, default: the secret's last element
  mode: "0440"                            # optional, octal, default 0400
  uid: 0
  gid: 1000
  ---
  kind: Secret                            # a secret the bindings need: names only, never values
  name: payments/db-password

or one document with lists: bindings: [...] and secrets: [...]. Unknown
fields, a field given twice, wrong types and invalid bindings are errors
naming the file and line, and nothing is changed. Values that start with
'!', '*', '&', '[' or '{' must be quoted (selector: '!debug').

Ownership: the bindings apply creates get managed_by: coffer-apply (or
--owner). --prune deletes the bindings carrying that marker that the files
no longer declare; bindings made by hand (coffer bind create) or by another
owner are never pruned. To let apply own a binding made by hand, give it
managed_by in its document. A Secret document whose secret does not exist
is a warning: apply never stores values (coffer secret put does).

coffer export prints the bindings and secret names in this shape, so
"coffer export > x.yaml && coffer apply -f x.yaml" changes nothing.`,
		Example: `  coffer apply -f bindings.yaml --dry-run
  coffer apply -f bindings/ --prune
  coffer export > all.yaml && coffer apply -f all.yaml
  coffer apply -f team-a/ --prune --owner team-a`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return err
			}
			if len(files) == 0 {
				return usageError(errors.New("-f FILE|DIR is required"))
			}
			if errs := validation.IsValidLabelValue(owner); owner == "" || len(errs) > 0 {
				return usageError(fmt.Errorf("--owner %q: a label value (at most 63 letters, digits, '-', '_', '.')", owner))
			}
			m, err := readManifests(cmd.InOrStdin(), files)
			if err != nil {
				return usageError(err)
			}
			cl, err := c.client()
			if err != nil {
				return err
			}
			bs := make([]binding, 0, len(m.bindings))
			for _, b := range m.bindings {
				bs = append(bs, b.v)
			}
			var p bindingPlan
			body := map[string]any{"bindings": bs, "owner": owner, "prune": prune}
			if err := cl.do("POST", "/v1/apply"+dryRunQuery(dry, "?"), body, &p); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if err := o.printWith(w, p, func(w io.Writer) { printBindingPlan(w, p, verbose) }); err != nil {
				return err
			}
			if len(m.secrets) > 0 {
				st := statuses(cl)
				for _, s := range m.secrets {
					switch st(s.v) {
					case "secret missing":
						fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s: secret %s does not exist: apply never stores values; store it with coffer secret put %s\n", s.pos, s.v, s.v)
					case "secret deleted":
						fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s: secret %s is deleted: coffer secret undelete %s restores it\n", s.pos, s.v, s.v)
					}
				}
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&files, "filename", "f", nil, "a YAML file, a directory of them, or - for standard input (repeatable)")
	cmd.Flags().BoolVar(&prune, "prune", false, "delete the bindings marked with --owner that the files no longer declare")
	cmd.Flags().StringVar(&owner, "owner", defaultOwner, "ownership marker (managed_by) of the bindings this apply creates and prunes")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show the changes and which running containers would gain or lose which secret; change nothing")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "also list the bindings left unchanged")
	o.flag(cmd)
	return cmd
}

// readManifests reads files and directories (their *.yaml and *.yml
// files, sorted) into one manifest.
func readManifests(stdin io.Reader, paths []string) (*manifest, error) {
	m := &manifest{}
	read := func(name string, r io.Reader) error {
		data, err := io.ReadAll(io.LimitReader(r, maxManifest+1))
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return m.parse(name, data)
	}
	for _, p := range paths {
		if p == "-" {
			if err := read("<stdin>", stdin); err != nil {
				return nil, err
			}
			continue
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		names := []string{p}
		if fi.IsDir() {
			names = nil
			ents, err := os.ReadDir(p)
			if err != nil {
				return nil, err
			}
			for _, e := range ents {
				if ext := filepath.Ext(e.Name()); !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
					names = append(names, filepath.Join(p, e.Name()))
				}
			}
			if len(names) == 0 {
				return nil, fmt.Errorf("%s: no *.yaml or *.yml files in it", p)
			}
			slices.Sort(names)
		}
		for _, n := range names {
			f, err := os.Open(n)
			if err != nil {
				return nil, err
			}
			err = read(n, f)
			f.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}

func newExportCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "export",
		Short: "Print the bindings and secret names as YAML that coffer apply reads (never values)",
		Long: `Print every binding and the names of the live secrets within your token's
scope, as the documents coffer apply reads: "coffer export > x.yaml &&
coffer apply -f x.yaml" changes nothing. Secret values are never exported
(the API cannot read them back); a Secret document only names a secret the
bindings need.`,
		Example: `  coffer export > coffer.yaml
  coffer export | grep -A8 'name: web-db'`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := c.client()
			if err != nil {
				return err
			}
			var ms []secretMeta
			if err := cl.do("GET", "/v1/secrets", nil, &ms); err != nil {
				return err
			}
			var bs []binding
			if err := cl.do("GET", "/v1/bindings", nil, &bs); err != nil {
				return err
			}
			names := make([]string, 0, len(ms))
			for _, m := range ms {
				names = append(names, m.Name)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "# coffer export: %d secrets (names only, never values) and %d bindings.\n# coffer apply -f FILE applies it; applying it unchanged changes nothing.\n",
				len(names), len(bs))
			return writeManifest(w, names, bs)
		},
	}
	return cmd
}
