package cli

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"coffer/internal/tmpl"
)

func readTemplate(file string) (string, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return "", usageError(err)
	}
	if len(b) > tmpl.MaxSource {
		return "", usageError(fmt.Errorf("%s: %d bytes, a template may have at most %d", file, len(b), tmpl.MaxSource))
	}
	return string(b), nil
}

// putTemplateFile stores the template in file as the templated secret
// name (a dry run only checks it).
func putTemplateFile(cl *client, name, file string, dry bool) error {
	src, err := readTemplate(file)
	if err != nil {
		return err
	}
	return cl.do("PUT", "/v1/templates/"+escapePath(name)+dryRunQuery(dry, "?"), map[string]string{"template": src}, nil)
}

func newSecretTemplateCmd(c *conn) *cobra.Command {
	var file string
	var dry bool
	var o output
	cmd := &cobra.Command{
		Use:   "template NAME --file TEMPLATE",
		Short: "Make a secret templated: its file rendered from other secrets (a DSN, a config file)",
		Long: `Make NAME a templated secret: its value is rendered from a Go text/template over
other secrets, on the server and in memory, each time an agent is sent it;
nothing rendered is stored, and the agent gets only the rendered file, not
the secrets it was made from. Bind it like any secret (or use coffer bind
create --template-file). A new version of any secret it reads makes a new
version of it, swapped atomically in every container; a secret it reads
deleted or revoked takes the file out of the containers until it is back.

The template reads secrets by literal name and has a few helpers:
  {{ secret "payments/db-password" }}      the value (text; a binary value must be encoded)
  {{ secret "payments/key" | base64 }}     base64 (standard, padded)
  {{ secret "payments/user" | json }}      a JSON string
  {{ secret "payments/user" | urlquery }}  escaped for a URL
  {{ secret "payments/x" | trim }}         without surrounding white space
  {{ secret "payments/opt" | default "none" }}
  {{ if secret "payments/x" }}...{{ else }}...{{ end }}, and, or, not, eq, ne
It may not loop, define or call templates. Every secret it reads must exist
and be within your token's scope.`,
		Example: `  printf 'postgres://{{ secret "payments/db-user" }}:{{ secret "payments/db-password" | urlquery }}@db:5432/pay\n' > dsn.tmpl
  coffer secret template payments/db-dsn --file dsn.tmpl
  coffer bind create web-dsn --secret payments/db-dsn --selector app=web --file db.url
  coffer secret template payments/db-dsn --file dsn.tmpl --dry-run`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := checkSecretArg(&o, name); err != nil {
				return err
			}
			if file == "" {
				return usageError(fmt.Errorf("--file TEMPLATE is required"))
			}
			src, err := readTemplate(file)
			if err != nil {
				return err
			}
			return c.writeSecret(cmd, &o, "PUT", "/v1/templates/"+escapePath(name), dry, map[string]string{"template": src}, nil, func(w io.Writer, m secretMeta) {
				fmt.Fprintf(w, "%s: version %d, rendered from %s\n", m.Name, m.Current, strings.Join(m.Template.Inputs, ", "))
			})
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the template file (required)")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "check and render it once, show which running containers would get it; store nothing")
	o.flag(cmd)
	return cmd
}
