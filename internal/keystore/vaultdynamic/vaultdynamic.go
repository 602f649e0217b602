// Package vaultdynamic issues per-container credentials from a HashiCorp
// Vault secrets engine that makes them on request, such as the database
// secrets engine (database/creds/ROLE), through Vault's official Go client
// (github.com/hashicorp/vault/api).
//
// It is a keystore.Issuer, not a keystore.Keystore: every Issue is a new
// lease (a new database user), renewed with sys/leases/renew and ended with
// sys/leases/revoke. Coffer's own Vault token is handled as for type vault
// (token file, AppRole or cert auth; see package vault).
//
// Responses carrying credentials are read raw and parsed by Coffer, so that
// the buffers holding them are zeroed after use.
package vaultdynamic

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode"

	"github.com/hashicorp/vault/api"

	"coffer/internal/keystore"
	"coffer/internal/keystore/vault"
	"coffer/internal/secret"
)

// Type is the `type:` value that selects this upstream.
const Type = "vault-dynamic"

// Builtin describes the implementation for the builtins list. Its poll
// interval is not used: nothing is polled.
func Builtin() keystore.Builtin {
	return keystore.Builtin{
		Type:                Type,
		DefaultPollInterval: time.Minute,
		NewConfig:           func() keystore.UpstreamConfig { return &Config{} },
	}
}

// Config is a vault-dynamic upstream's own keys: those of type vault
// without kv_mount.
type Config struct {
	Address       string          `yaml:"address"`
	CAFile        string          `yaml:"ca_file"`
	TLSServerName string          `yaml:"tls_server_name"`
	Namespace     string          `yaml:"namespace"`
	TokenFile     string          `yaml:"token_file"`
	AppRole       *vault.AppRole  `yaml:"approle"`
	Cert          *vault.CertAuth `yaml:"cert"`

	// MaxRetries is as in vault.Config (not in YAML: for tests).
	MaxRetries int `yaml:"-"`
}

func (c *Config) vault() vault.Config {
	return vault.Config{
		Address: c.Address, CAFile: c.CAFile, TLSServerName: c.TLSServerName, Namespace: c.Namespace,
		KVMount:   "secret", // unused; keeps vault.Config.Validate content
		TokenFile: c.TokenFile, AppRole: c.AppRole, Cert: c.Cert, MaxRetries: c.MaxRetries,
	}
}

// Validate implements keystore.UpstreamConfig.
func (c *Config) Validate() error {
	vc := c.vault()
	return vc.Validate()
}

// Open implements keystore.UpstreamConfig: an issuer is not a keystore.
func (c *Config) Open(opts keystore.Options) (keystore.Keystore, error) {
	return nil, fmt.Errorf("%w: keystores.%s: type %s issues credentials; it cannot be read as a keystore", keystore.ErrConfig, opts.Name, Type)
}

// OpenIssuer implements keystore.IssuerConfig.
func (c *Config) OpenIssuer(opts keystore.Options) (keystore.Issuer, error) { return New(*c, opts) }

// Issuer is a vault-dynamic upstream.
type Issuer struct {
	name string
	opts keystore.Options
	c    *api.Client
	auth *vault.Auth
}

var _ keystore.Issuer = (*Issuer)(nil)

// New returns an Issuer for cfg. It reads no credential and makes no
// request until first used.
func New(cfg Config, opts keystore.Options) (*Issuer, error) {
	opts = opts.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: keystores.%s: %w", keystore.ErrConfig, opts.Name, err)
	}
	vc := cfg.vault()
	c, err := vault.NewClient(vc, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: keystores.%s: %w", keystore.ErrConfig, opts.Name, err)
	}
	return &Issuer{name: opts.Name, opts: opts, c: c, auth: vault.NewAuth(vc, c, opts.Logger)}, nil
}

// ValidateItem implements keystore.Issuer: a Vault path such as
// database/creds/app.
func (is *Issuer) ValidateItem(item string) error {
	if item == "" || strings.HasPrefix(item, "/") || strings.HasSuffix(item, "/") || !strings.Contains(item, "/") {
		return fmt.Errorf("%w: vault-dynamic item %q: want a Vault path that issues credentials, such as database/creds/app",
			keystore.ErrInvalidRef, item)
	}
	if strings.HasPrefix(item, "sys/") || strings.HasPrefix(item, "auth/") || strings.HasPrefix(item, "identity/") || strings.HasPrefix(item, "cubbyhole/") {
		return fmt.Errorf("%w: vault-dynamic item %q: Vault's system, auth, identity and cubbyhole paths do not issue credentials",
			keystore.ErrInvalidRef, item)
	}
	if len(item) > 1024 || strings.ContainsAny(item, "?#%\\*+ ") {
		return fmt.Errorf("%w: vault-dynamic item %q: no '?', '#', '%%', '\\', '*', '+' or spaces, at most 1024 bytes", keystore.ErrInvalidRef, item)
	}
	for i, r := range item {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("%w: vault-dynamic item has a control character at byte %d", keystore.ErrInvalidRef, i)
		}
	}
	for _, seg := range strings.Split(item, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: vault-dynamic item %q: want path segments separated by single '/', no '.' or '..'", keystore.ErrInvalidRef, item)
		}
	}
	return nil
}

// leaseResponse is a read of a credentials endpoint.
type leaseResponse struct {
	LeaseID       string                     `json:"lease_id"`
	LeaseDuration int64                      `json:"lease_duration"`
	Renewable     bool                       `json:"renewable"`
	Data          map[string]json.RawMessage `json:"data"`
}

// Issue implements keystore.Issuer.
func (is *Issuer) Issue(ctx context.Context, item string) (keystore.Lease, error) {
	if err := is.ValidateItem(item); err != nil {
		return keystore.Lease{}, &keystore.Error{Upstream: is.name, Item: item, Err: err}
	}
	body, err := is.do(ctx, item, func(c *api.Client) ([]byte, error) {
		resp, err := c.Logical().ReadRawWithContext(ctx, item)
		if err != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, err
		}
		defer resp.Body.Close()
		return keystore.ReadLimited(resp.Body, is.opts.BodyLimit())
	})
	if err != nil {
		return keystore.Lease{}, err
	}
	defer clear(body)
	var r leaseResponse
	if err := json.Unmarshal(body, &r); err != nil {
		return keystore.Lease{}, keystore.Errorf(is.name, item, keystore.ErrUnreachable, "Vault's answer is not the JSON expected")
	}
	defer func() {
		for _, v := range r.Data {
			clear(v)
		}
	}()
	if r.LeaseID == "" {
		// A leaseless read (a KV secret, a static role): nothing to renew
		// or revoke, so nothing Coffer can give each container.
		return keystore.Lease{}, keystore.Errorf(is.name, item, keystore.ErrInvalidRef,
			"Vault answered without a lease or credentials: the path does not issue credentials (want e.g. database/creds/ROLE)")
	}
	if len(r.Data) == 0 {
		is.revokeQuiet(r.LeaseID)
		return keystore.Lease{}, keystore.Errorf(is.name, item, keystore.ErrInvalidRef, "Vault issued a lease without credentials")
	}
	v, err := keystore.CanonicalObject(r.Data)
	if err != nil {
		is.revokeQuiet(r.LeaseID)
		return keystore.Lease{}, keystore.Errorf(is.name, item, keystore.ErrUnreachable, "%s", err.Error())
	}
	if len(v) > is.opts.MaxValueSize {
		clear(v)
		is.revokeQuiet(r.LeaseID)
		return keystore.Lease{}, keystore.Errorf(is.name, item, keystore.ErrTooLarge,
			"the credentials are %d bytes as JSON, more than max_value_size %d", len(v), is.opts.MaxValueSize)
	}
	return keystore.Lease{ID: r.LeaseID, TTL: time.Duration(r.LeaseDuration) * time.Second, Renewable: r.Renewable, Value: secret.Value(v)}, nil
}

// revokeQuiet revokes a lease Coffer will not use (a refused answer).
func (is *Issuer) revokeQuiet(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), is.opts.Timeout)
	defer cancel()
	if err := is.Revoke(ctx, id); err != nil {
		is.opts.Logger.Warn("vault-dynamic: revoking a refused lease failed; it ends at its TTL", "lease_id", id, "err", keystore.Detail(err.Error()))
	}
}

// Renew implements keystore.Issuer.
func (is *Issuer) Renew(ctx context.Context, leaseID string, increment time.Duration) (time.Duration, error) {
	var ttl time.Duration
	_, err := is.do(ctx, leaseID, func(c *api.Client) ([]byte, error) {
		s, err := c.Sys().RenewWithContext(ctx, leaseID, int(increment/time.Second))
		if err != nil {
			return nil, err
		}
		if s == nil {
			return nil, errors.New("renewal returned no lease")
		}
		ttl = time.Duration(s.LeaseDuration) * time.Second
		return nil, nil
	})
	return ttl, err
}

// Revoke implements keystore.Issuer.
func (is *Issuer) Revoke(ctx context.Context, leaseID string) error {
	_, err := is.do(ctx, leaseID, func(c *api.Client) ([]byte, error) {
		return nil, c.Sys().RevokeWithContext(ctx, leaseID)
	})
	return err
}

// do runs one request with the current token; on 403 it authenticates
// once more and retries once. item names the request in errors (a path or
// a lease id).
func (is *Issuer) do(ctx context.Context, item string, f func(*api.Client) ([]byte, error)) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, is.opts.Timeout)
	defer cancel()
	for attempt := 0; ; attempt++ {
		tok, err := is.auth.Token(ctx)
		if err != nil {
			return nil, is.authError(item, err)
		}
		body, err := f(is.auth.Client(tok))
		var re *api.ResponseError
		if attempt == 0 && errors.As(err, &re) && re.StatusCode == http.StatusForbidden && is.auth.Reauth(ctx, tok) {
			continue
		}
		if err != nil {
			return nil, is.requestError(ctx, item, err)
		}
		return body, nil
	}
}

// requestError classifies an error of a request to Vault. Vault's error
// messages never carry credentials.
func (is *Issuer) requestError(ctx context.Context, item string, err error) error {
	var re *api.ResponseError
	if !errors.As(err, &re) {
		if keystore.IsContextError(ctx, err) {
			return keystore.Errorf(is.name, item, keystore.ErrUnreachable, "%w", ctx.Err())
		}
		return keystore.Errorf(is.name, item, keystore.TransportError(err), "%s", keystore.Detail(err.Error()))
	}
	msg := keystore.Detail(strings.Join(re.Errors, "; "))
	switch {
	case re.StatusCode == http.StatusNotFound && strings.Contains(msg, "no handler for route"):
		return keystore.Errorf(is.name, item, keystore.ErrNotFound, "nothing is mounted at this path in Vault (%s)", msg)
	case re.StatusCode == http.StatusNotFound:
		return keystore.Errorf(is.name, item, keystore.ErrNotFound, "Vault has nothing at this path (HTTP 404)")
	case re.StatusCode == http.StatusForbidden:
		return keystore.Errorf(is.name, item, keystore.ErrAccessLost, "Vault denied access (HTTP 403: %s)", msg)
	case re.StatusCode == http.StatusBadRequest && (strings.Contains(msg, "lease not found") || strings.Contains(msg, "invalid lease") ||
		strings.Contains(msg, "not renewable") || strings.Contains(msg, "lease expired")):
		return keystore.Errorf(is.name, item, keystore.ErrNotFound, "%s", msg)
	case re.StatusCode == http.StatusBadRequest:
		return keystore.Errorf(is.name, item, keystore.ErrInvalidRef, "Vault refused the request (HTTP 400: %s)", msg)
	}
	return keystore.Errorf(is.name, item, keystore.ErrUnreachable, "HTTP %d: %s", re.StatusCode, msg)
}

// authError classifies a failure to obtain a token.
func (is *Issuer) authError(item string, err error) error {
	var re *api.ResponseError
	switch {
	case errors.As(err, &re) && (re.StatusCode == http.StatusForbidden || re.StatusCode == http.StatusBadRequest ||
		re.StatusCode == http.StatusUnauthorized):
		return keystore.Errorf(is.name, item, keystore.ErrAccessLost, "login refused (HTTP %d: %s)", re.StatusCode,
			keystore.Detail(strings.Join(re.Errors, "; ")))
	case errors.As(err, &re):
		return keystore.Errorf(is.name, item, keystore.ErrUnreachable, "login: HTTP %d: %s", re.StatusCode,
			keystore.Detail(strings.Join(re.Errors, "; ")))
	case strings.Contains(err.Error(), "no usable Vault credentials"):
		return keystore.Errorf(is.name, item, keystore.ErrAccessLost, "%s", keystore.Detail(err.Error()))
	}
	return keystore.Errorf(is.name, item, keystore.TransportError(err), "login: %s", keystore.Detail(err.Error()))
}

// Close implements keystore.Issuer.
func (is *Issuer) Close() error {
	is.auth.Close()
	is.c.ClearToken()
	return nil
}
