package cli

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"
)

// configPathHelp names the config file in help texts.
const configPathHelp = "$XDG_CONFIG_HOME/coffer/config.yaml (default ~/.config/coffer/config.yaml; env COFFER_CONFIG)"

// Config is the CLI's config file: named connections to servers.
type Config struct {
	CurrentContext string    `yaml:"current-context,omitempty" json:"current-context,omitempty"`
	Contexts       []Context `yaml:"contexts" json:"contexts"`
}

// Context is one server and how to authenticate to it. Tokens belong in
// files (TokenFile); an inline Token is accepted but never printed.
type Context struct {
	Name      string `yaml:"name" json:"name"`
	Addr      string `yaml:"addr,omitempty" json:"addr,omitempty"`
	CACert    string `yaml:"cacert,omitempty" json:"cacert,omitempty"`
	TokenFile string `yaml:"token-file,omitempty" json:"token-file,omitempty"`
	Token     string `yaml:"token,omitempty" json:"token,omitempty"`
}

// redacted is what config view shows instead of an inline token.
const redacted = "REDACTED"

func (cfg *Config) find(name string) *Context {
	for i := range cfg.Contexts {
		if cfg.Contexts[i].Name == name {
			return &cfg.Contexts[i]
		}
	}
	return nil
}

// known is a usage error naming the contexts there are, unless name is one
// of them; path is the config file's, for the message.
func (cfg *Config) known(name, path string) error {
	if cfg.find(name) != nil {
		return nil
	}
	return usageError(fmt.Errorf("no context %q in %s; known: %s (create it with coffer config set-context)", name, orNone(path), orNone(strings.Join(cfg.names(), ", "))))
}

func (cfg *Config) names() []string {
	var ns []string
	for _, c := range cfg.Contexts {
		ns = append(ns, c.Name)
	}
	return ns
}

// configPath is where the config file lives: COFFER_CONFIG, else
// $XDG_CONFIG_HOME/coffer/config.yaml, else ~/.config/coffer/config.yaml.
func configPath() (string, error) {
	if p := os.Getenv("COFFER_CONFIG"); p != "" {
		return p, nil
	}
	if x := os.Getenv("XDG_CONFIG_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "coffer", "config.yaml"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no config file: %w (set XDG_CONFIG_HOME or COFFER_CONFIG)", err)
	}
	return filepath.Join(home, ".config", "coffer", "config.yaml"), nil
}

// loadConfig reads the config file; a missing file is an empty config. It
// warns if others may read the file.
func (c *conn) loadConfig() (*Config, string, error) {
	path, err := configPath()
	if err != nil {
		return &Config{}, "", nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &Config{}, path, nil
	}
	if err != nil {
		return nil, path, usageError(fmt.Errorf("config file: %w", err))
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		c.warn("config file %s has mode %04o: others on this machine may read it; chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	var cfg Config
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return nil, path, usageError(fmt.Errorf("config file %s: %v", path, err))
	}
	seen := map[string]bool{}
	for i, cx := range cfg.Contexts {
		if err := validContextName(cx.Name); err != nil {
			return nil, path, usageError(fmt.Errorf("config file %s: context %d: %v", path, i+1, err))
		}
		if seen[cx.Name] {
			return nil, path, usageError(fmt.Errorf("config file %s: context %q given twice", path, cx.Name))
		}
		seen[cx.Name] = true
		cfg.Contexts[i].CACert = expandHome(cx.CACert)
		cfg.Contexts[i].TokenFile = expandHome(cx.TokenFile)
	}
	return &cfg, path, nil
}

func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}

// saveConfig writes cfg to path atomically, mode 0600 (directory 0700).
func saveConfig(path string, cfg *Config) error {
	if path == "" {
		return usageError(errors.New("no config file: set XDG_CONFIG_HOME, HOME or COFFER_CONFIG"))
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".config-*.yaml")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// selectContext returns the context to use: --context, else
// COFFER_CONTEXT, else the file's current-context; nil if there is none.
// Naming a context that does not exist is a usage error.
func (c *conn) selectContext() (*Context, error) {
	cfg, path, err := c.loadConfig()
	if err != nil {
		return nil, err
	}
	name, from := c.context, "--context"
	if name == "" {
		name, from = os.Getenv("COFFER_CONTEXT"), "COFFER_CONTEXT"
	}
	if name == "" {
		name, from = cfg.CurrentContext, "current-context in "+path
	}
	if name == "" {
		return nil, nil
	}
	if cx := cfg.find(name); cx != nil {
		return cx, nil
	}
	return nil, usageError(fmt.Errorf("%s names context %q, which is not in %s; known: %s (coffer config get-contexts)", from, name, orNone(path), orNone(strings.Join(cfg.names(), ", "))))
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

var contextName = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9._-]{0,62}[A-Za-z0-9])?$`)

func validContextName(n string) error {
	if !contextName.MatchString(n) {
		return fmt.Errorf("context name %q: use letters, digits and '.', '_', '-' inside, at most 64 characters", n)
	}
	return nil
}

func newConfigCmd(c *conn) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Contexts: named servers with the CA and token file to use for each",
		Long: `The config file holds contexts: a server address, the CA certificate to
trust and the file holding the token, under a name. Every server command
uses the current context (coffer config use-context), or the one named by
--context or COFFER_CONTEXT. Flags win over environment variables, which
win over the context, setting by setting.

The file is ` + configPathHelp + `.
coffer writes it with mode 0600 and warns when others may read it. It names
token files, not tokens; config view and get-contexts never print a token.`,
	}
	cmd.AddCommand(newSetContextCmd(c), newUseContextCmd(c), newGetContextsCmd(c), newCurrentContextCmd(c), newDeleteContextCmd(c), newConfigViewCmd(c))
	return cmd
}

func newSetContextCmd(c *conn) *cobra.Command {
	var cx Context
	cmd := &cobra.Command{
		Use:   "set-context NAME [--addr URL] [--cacert FILE] [--token-file FILE]",
		Short: "Create or change a context (only the settings given change)",
		Long: `Create a context, or change the settings given of an existing one (an empty
value removes a setting). Paths are stored absolute. The first context
becomes the current one.`,
		Example: `  coffer config set-context prod --addr https://coffer.example.com:7443 --cacert ~/coffer/prod-ca.pem --token-file ~/.config/coffer/prod.token
  coffer config set-context dev --server 127.0.0.1:7443 --ca-cert ./coffer-data/ca.pem --token-file ./coffer-data/admin.token
  coffer config set-context prod --token-file ~/.config/coffer/prod-ci.token   # change one setting`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := validContextName(name); err != nil {
				return usageError(err)
			}
			f := cmd.Flags()
			if f.Changed("addr") && cx.Addr != "" {
				if _, err := parseAddr(cx.Addr); err != nil {
					return usageError(fmt.Errorf("--addr %w", err))
				}
			}
			for _, p := range []struct {
				flag string
				val  *string
			}{{"cacert", &cx.CACert}, {"token-file", &cx.TokenFile}} {
				if !f.Changed(p.flag) || *p.val == "" {
					continue
				}
				abs, err := filepath.Abs(expandHome(*p.val))
				if err != nil {
					return usageError(fmt.Errorf("--%s: %w", p.flag, err))
				}
				b, err := os.ReadFile(abs)
				if err != nil {
					return usageError(fmt.Errorf("--%s: %w", p.flag, err))
				}
				if p.flag == "cacert" && !x509.NewCertPool().AppendCertsFromPEM(b) {
					return usageError(fmt.Errorf("--cacert %s: no PEM certificate in it", abs))
				}
				clear(b)
				*p.val = abs
			}
			if f.Changed("token-file") && cx.TokenFile != "" {
				if _, err := c.readTokenFile(cx.TokenFile, "--token-file"); err != nil {
					return err
				}
			}
			cfg, path, err := c.loadConfig()
			if err != nil {
				return err
			}
			old := cfg.find(name)
			verb := "changed"
			if old == nil {
				cfg.Contexts = append(cfg.Contexts, Context{Name: name})
				old = &cfg.Contexts[len(cfg.Contexts)-1]
				verb = "created"
			}
			if f.Changed("addr") {
				old.Addr = cx.Addr
			}
			if f.Changed("cacert") {
				old.CACert = cx.CACert
			}
			if f.Changed("token-file") {
				old.TokenFile = cx.TokenFile
			}
			if cfg.CurrentContext == "" {
				cfg.CurrentContext = name
			}
			if err := saveConfig(path, cfg); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "context %s %s in %s (current context: %s)\n", name, verb, path, cfg.CurrentContext)
			return nil
		},
		ValidArgsFunction: completeContexts,
	}
	f := cmd.Flags()
	f.StringVar(&cx.Addr, "addr", "", "server URL https://host:port, or host:port (alias --server)")
	f.StringVar(&cx.CACert, "cacert", "", "CA certificate to trust, the server's <data-dir>/ca.pem (alias --ca-cert)")
	f.StringVar(&cx.TokenFile, "token-file", "", "file holding the token (keep it mode 0600)")
	return cmd
}

func newUseContextCmd(c *conn) *cobra.Command {
	return &cobra.Command{
		Use:     "use-context NAME",
		Short:   "Make a context the current one",
		Example: "  coffer config use-context prod",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, path, err := c.loadConfig()
			if err != nil {
				return err
			}
			if err := cfg.known(args[0], path); err != nil {
				return err
			}
			cfg.CurrentContext = args[0]
			if err := saveConfig(path, cfg); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "current context: %s\n", args[0])
			return nil
		},
		ValidArgsFunction: completeContexts,
	}
}

func newCurrentContextCmd(c *conn) *cobra.Command {
	return &cobra.Command{
		Use:     "current-context",
		Short:   "Print the current context's name",
		Example: "  coffer config current-context",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, path, err := c.loadConfig()
			if err != nil {
				return err
			}
			if cfg.CurrentContext == "" {
				return usageError(fmt.Errorf("no current context in %s (coffer config use-context NAME)", orNone(path)))
			}
			fmt.Fprintln(cmd.OutOrStdout(), cfg.CurrentContext)
			return nil
		},
	}
}

func newDeleteContextCmd(c *conn) *cobra.Command {
	return &cobra.Command{
		Use:     "delete-context NAME",
		Short:   "Remove a context from the config file (its token file stays)",
		Example: "  coffer config delete-context old-lab",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, path, err := c.loadConfig()
			if err != nil {
				return err
			}
			if err := cfg.known(args[0], path); err != nil {
				return err
			}
			cfg.Contexts = slices.DeleteFunc(cfg.Contexts, func(cx Context) bool { return cx.Name == args[0] })
			if cfg.CurrentContext == args[0] {
				cfg.CurrentContext = ""
			}
			if err := saveConfig(path, cfg); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "context %s deleted\n", args[0])
			return nil
		},
		ValidArgsFunction: completeContexts,
	}
}

// redact returns cfg without inline token values.
func redact(cfg *Config) *Config {
	out := &Config{CurrentContext: cfg.CurrentContext, Contexts: slices.Clone(cfg.Contexts)}
	for i := range out.Contexts {
		if out.Contexts[i].Token != "" {
			out.Contexts[i].Token = redacted
		}
	}
	if out.Contexts == nil {
		out.Contexts = []Context{}
	}
	return out
}

func newGetContextsCmd(c *conn) *cobra.Command {
	var o output
	cmd := &cobra.Command{
		Use:     "get-contexts",
		Short:   "List the contexts (the current one marked *); never a token",
		Example: "  coffer config get-contexts\n  coffer config get-contexts -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := c.loadConfig()
			if err != nil {
				return err
			}
			cfg = redact(cfg)
			rows := [][]string{}
			for _, cx := range cfg.Contexts {
				cur := ""
				if cx.Name == cfg.CurrentContext {
					cur = "*"
				}
				tok := dash(cx.TokenFile)
				if cx.Token != "" {
					tok = "(inline, " + redacted + ")"
				}
				rows = append(rows, []string{cur, cx.Name, dash(cx.Addr), dash(cx.CACert), tok})
			}
			return o.print(cmd.OutOrStdout(), cfg.Contexts, []string{"CURRENT", "NAME", "ADDR", "CACERT", "TOKEN"}, rows)
		},
	}
	o.flag(cmd)
	return cmd
}

func newConfigViewCmd(c *conn) *cobra.Command {
	o := output{format: formatYAML}
	cmd := &cobra.Command{
		Use:     "view",
		Short:   "Print the config file, inline tokens redacted",
		Example: "  coffer config view\n  coffer config view -o json",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, _, err := c.loadConfig()
			if err != nil {
				return err
			}
			if o.format == formatTable {
				o.format = formatYAML
			}
			return o.print(cmd.OutOrStdout(), redact(cfg), nil, nil)
		},
	}
	o.flagWithHelp(cmd, "output format: yaml or json (table means yaml)")
	return cmd
}

// completeContexts offers the config file's context names.
func completeContexts(_ *cobra.Command, _ []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	c := &conn{quiet: true}
	cfg, _, err := c.loadConfig()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var out []cobra.Completion
	for _, n := range cfg.names() {
		if strings.HasPrefix(n, toComplete) {
			out = append(out, n)
		}
	}
	return out, cobra.ShellCompDirectiveNoFileComp
}
