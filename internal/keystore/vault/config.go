// Package vault links Coffer secrets to items of a HashiCorp Vault KV
// version 2 secrets engine, through Vault's official Go client
// (github.com/hashicorp/vault/api).
//
// An item is a path under the configured KV v2 mount ("payments/db" for
// secret/data/payments/db); its value is the version's data as one JSON
// object (keys sorted), from which #KEY picks one key. The version is the KV
// version number. Check reads each item's metadata (current_version and the
// state of that version), one request per item, never the value: Vault CE
// has no bulk "changed since" call and no event feed (events are Enterprise
// only since 1.16).
//
// Coffer authenticates with a token file (re-read when Vault rejects the
// token, renewed while renewable), AppRole, or TLS certificate auth (both
// logged in again before the token's lease runs out).
package vault

import (
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"coffer/internal/keystore"
)

// Type is the `type:` value that selects this upstream.
const Type = "vault"

// DefaultPollInterval: a metadata read per linked item per interval; see
// docs/keystores.md for the cost.
const DefaultPollInterval = 10 * time.Second

// Builtin describes the implementation for the builtins list.
func Builtin() keystore.Builtin {
	return keystore.Builtin{
		Type:                Type,
		DefaultPollInterval: DefaultPollInterval,
		NewConfig:           func() keystore.UpstreamConfig { return &Config{KVMount: "secret"} },
	}
}

// Config is a Vault upstream's own configuration keys.
type Config struct {
	Address       string `yaml:"address"`         // https://vault.example:8200 (http only to loopback)
	CAFile        string `yaml:"ca_file"`         // PEM CA bundle; default: the system pool
	TLSServerName string `yaml:"tls_server_name"` // SNI / name to verify, if not the address's host
	Namespace     string `yaml:"namespace"`       // Vault Enterprise namespace
	KVMount       string `yaml:"kv_mount"`        // KV v2 mount path, default "secret"

	// Exactly one of the three ways to authenticate.
	TokenFile string    `yaml:"token_file"` // file holding a token (e.g. a Vault Agent sink)
	AppRole   *AppRole  `yaml:"approle"`
	Cert      *CertAuth `yaml:"cert"`

	// MaxRetries is how often the client retries a request that failed
	// with a 5xx or a connection error: 0 means 2, -1 none. Not in YAML:
	// for tests.
	MaxRetries int `yaml:"-"`

	// ChangeHints, if set, takes change hints from Vault's socket audit
	// device (see Hints).
	ChangeHints *Hints `yaml:"change_hints"`
}

// AppRole is AppRole authentication.
type AppRole struct {
	RoleIDFile   string `yaml:"role_id_file"`
	SecretIDFile string `yaml:"secret_id_file"`
	Mount        string `yaml:"mount"` // default "approle"
}

// CertAuth is TLS certificate authentication: the client certificate is
// presented on every connection and logged in with at auth/<mount>/login.
type CertAuth struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	Role     string `yaml:"role"`  // optional certificate role name
	Mount    string `yaml:"mount"` // default "cert"
}

// Validate implements keystore.UpstreamConfig.
func (c *Config) Validate() error {
	if err := validateAddress(c.Address); err != nil {
		return err
	}
	if err := validateMount("kv_mount", c.KVMount); err != nil {
		return err
	}
	n := 0
	if c.TokenFile != "" {
		n++
	}
	if c.AppRole != nil {
		n++
		if c.AppRole.RoleIDFile == "" || c.AppRole.SecretIDFile == "" {
			return fmt.Errorf("approle: role_id_file and secret_id_file are both required")
		}
		if c.AppRole.Mount == "" {
			c.AppRole.Mount = "approle"
		}
		if err := validateMount("approle.mount", c.AppRole.Mount); err != nil {
			return err
		}
	}
	if c.Cert != nil {
		n++
		if c.Cert.CertFile == "" || c.Cert.KeyFile == "" {
			return fmt.Errorf("cert: cert_file and key_file are both required")
		}
		if c.Cert.Mount == "" {
			c.Cert.Mount = "cert"
		}
		if err := validateMount("cert.mount", c.Cert.Mount); err != nil {
			return err
		}
	}
	if n != 1 {
		return fmt.Errorf("give exactly one of token_file, approle and cert (got %d)", n)
	}
	if c.ChangeHints != nil {
		if err := c.ChangeHints.validate(); err != nil {
			return err
		}
	}
	if c.MaxRetries < -1 || c.MaxRetries > 10 {
		return fmt.Errorf("max retries %d: must be -1 to 10", c.MaxRetries)
	}
	return nil
}

// Open implements keystore.UpstreamConfig.
func (c *Config) Open(opts keystore.Options) (keystore.Keystore, error) { return New(*c, opts) }

// validateAddress wants an http(s) URL with a host and nothing after it;
// plain http only to a loopback address (a token must not cross a network
// in clear).
func validateAddress(addr string) error {
	if addr == "" {
		return fmt.Errorf("address is missing (e.g. https://vault.example:8200)")
	}
	u, err := url.Parse(addr)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.User != nil {
		return fmt.Errorf("address %q: want https://host[:port]", addr)
	}
	if u.Scheme == "http" && !loopback(u.Hostname()) {
		return fmt.Errorf("address %q: plain http is allowed to a loopback address only; use https", addr)
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func validateMount(key, m string) error {
	if m == "" || strings.HasPrefix(m, "/") || strings.HasSuffix(m, "/") {
		return fmt.Errorf("%s %q: want a mount path such as \"secret\" (no leading or trailing '/')", key, m)
	}
	return validatePath(key, m)
}

// validatePath wants '/'-separated segments without empty, "." or ".."
// segments and without characters that change a URL's meaning.
func validatePath(key, p string) error {
	if len(p) > 1024 {
		return fmt.Errorf("%w: %s is longer than 1024 bytes", keystore.ErrInvalidRef, key)
	}
	if strings.ContainsAny(p, "?#%\\*+ ") {
		return fmt.Errorf("%w: %s %q: no '?', '#', '%%', '\\', '*', '+' or spaces", keystore.ErrInvalidRef, key, p)
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: %s %q: want path segments separated by single '/', no '.' or '..'", keystore.ErrInvalidRef, key, p)
		}
	}
	return nil
}
