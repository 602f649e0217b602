package cli

import (
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// A resource is what a shell completion asks the server for.
type resource struct {
	path  string // GET path listing it
	field string // the JSON field naming each item
	about string // the JSON field describing it, if any
	query bool   // the path takes ?prefix=
}

var (
	secretsRes  = resource{path: "/v1/secrets", field: "name", query: true}
	bindingsRes = resource{path: "/v1/bindings", field: "name", about: "secret"}
	agentsRes   = resource{path: "/v1/agents", field: "name", about: "address"}
	tokensRes   = resource{path: "/v1/tokens", field: "id", about: "role"}
)

// groupResources: the first argument of a command of these groups names
// one of these (except for commands that make a new one or take none).
var groupResources = map[string]resource{
	"secret":  secretsRes,
	"bind":    bindingsRes,
	"agent":   agentsRes,
	"token":   tokensRes,
	"rollout": secretsRes,
}

var noExisting = map[string]bool{"create": true, "ls": true, "test": true, "apply": true, "export": true}

var roles = []string{"admin", "operator", "auditor", "viewer", "agent"}

// completions wires shell completion: cobra's completion command gets
// examples, commands whose argument names a secret, binding, agent or
// token complete it from the server (when a connection is configured;
// silently nothing otherwise), and --secret, --role and -o complete their
// values.
func completions(c *conn, root *cobra.Command) {
	for _, cmd := range root.Commands() {
		if cmd.Name() != "completion" {
			continue
		}
		cmd.Example = "  source <(coffer completion bash)\n  coffer completion zsh > \"${fpath[1]}/_coffer\"\n  coffer completion fish > ~/.config/fish/completions/coffer.fish"
		for _, sh := range cmd.Commands() {
			sh.Example = completionExamples[sh.Name()]
		}
	}
	walk(root, func(cmd *cobra.Command) {
		if cmd.Parent() != nil && cmd.ValidArgsFunction == nil && takesName(cmd) && !noExisting[cmd.Name()] {
			if res, ok := groupResources[cmd.Parent().Name()]; ok {
				cmd.ValidArgsFunction = func(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
					if len(args) > 0 {
						return nil, cobra.ShellCompDirectiveNoFileComp
					}
					return c.complete(res, toComplete)
				}
			}
		}
		cmd.LocalFlags().VisitAll(func(f *pflag.Flag) {
			if _, ok := cmd.GetFlagCompletionFunc(f.Name); ok {
				return
			}
			switch f.Name {
			case "secret":
				_ = cmd.RegisterFlagCompletionFunc(f.Name, func(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
					return c.complete(secretsRes, toComplete)
				})
			case "role":
				_ = cmd.RegisterFlagCompletionFunc(f.Name, cobra.FixedCompletions(roles, cobra.ShellCompDirectiveNoFileComp))
			case "output":
				// scan's -o names a report file.
				if f.Value.Type() == "string" && !strings.HasPrefix(cmd.CommandPath(), "coffer scan") {
					_ = cmd.RegisterFlagCompletionFunc(f.Name, cobra.FixedCompletions(formats, cobra.ShellCompDirectiveNoFileComp))
				}
			}
		})
	})
}

var completionExamples = map[string]string{
	"bash":       "  source <(coffer completion bash)\n  coffer completion bash > /etc/bash_completion.d/coffer",
	"zsh":        "  coffer completion zsh > \"${fpath[1]}/_coffer\"",
	"fish":       "  coffer completion fish > ~/.config/fish/completions/coffer.fish",
	"powershell": "  coffer completion powershell | Out-String | Invoke-Expression",
}

// takesName reports whether a command's first argument is a name or id
// (NAME, ID, SECRET in its usage line).
func takesName(cmd *cobra.Command) bool {
	fields := strings.Fields(cmd.Use)
	if len(fields) < 2 {
		return false
	}
	arg := strings.Trim(fields[1], "[]")
	return arg != "" && unicode.IsUpper(rune(arg[0])) && !strings.HasPrefix(arg, "-")
}

// complete lists res's names starting with prefix; any problem (no
// connection configured, server down, no permission) gives no completions.
func (c *conn) complete(res resource, prefix string) ([]cobra.Completion, cobra.ShellCompDirective) {
	c.quiet, c.timeout = true, 3*time.Second
	none := cobra.ShellCompDirectiveNoFileComp
	cl, err := c.client()
	if err != nil || cl.token == "" {
		return nil, none
	}
	cl.rec = nil
	path := res.path
	if res.query {
		path += "?prefix=" + url.QueryEscape(prefix)
	}
	var items []map[string]any
	if err := cl.do("GET", path, nil, &items); err != nil {
		return nil, none
	}
	var out []cobra.Completion
	for _, it := range items {
		name, _ := it[res.field].(string)
		if name == "" || !strings.HasPrefix(name, prefix) {
			continue
		}
		if about, _ := it[res.about].(string); about != "" {
			out = append(out, cobra.CompletionWithDesc(name, fmt.Sprint(about)))
		} else {
			out = append(out, name)
		}
	}
	return out, none
}
