// Package transit is a seal.KeyWrapper whose master key lives in HashiCorp
// Vault's Transit secrets engine (transit/keys/<name>): data keys are
// wrapped with transit/encrypt and unwrapped with transit/decrypt, so the
// master key never leaves Vault. Vault authenticates Coffer as the KV
// upstream does (token file, AppRole or certificate; see keystore/vault).
//
// A wrapped data key is Vault's ciphertext string ("vault:v3:..."), which
// names the key version it was made under: after transit/keys/<name>/rotate,
// old data keys still unwrap, and Rewrap moves them to the newest version
// (transit/rewrap) without Coffer ever seeing them in clear.
package transit

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"github.com/hashicorp/vault/api"

	"coffer/internal/keystore"
	"coffer/internal/keystore/vault"
	"coffer/internal/seal"
)

// Config is the Transit master key's configuration.
type Config struct {
	Address       string          `yaml:"address"`
	CAFile        string          `yaml:"ca_file"`
	TLSServerName string          `yaml:"tls_server_name"`
	Namespace     string          `yaml:"namespace"`
	TokenFile     string          `yaml:"token_file"`
	AppRole       *vault.AppRole  `yaml:"approle"`
	Cert          *vault.CertAuth `yaml:"cert"`
	Mount         string          `yaml:"mount"` // Transit mount, default "transit"
	Key           string          `yaml:"key"`   // key name, e.g. coffer-kek (aes256-gcm96 recommended)

	MaxRetries int `yaml:"-"` // see vault.Config
}

func (c Config) vault() vault.Config {
	return vault.Config{Address: c.Address, CAFile: c.CAFile, TLSServerName: c.TLSServerName, Namespace: c.Namespace,
		KVMount: "secret", TokenFile: c.TokenFile, AppRole: c.AppRole, Cert: c.Cert, MaxRetries: c.MaxRetries}
}

// Validate checks the configuration; errors name the key.
func (c *Config) Validate() error {
	if c.Mount == "" {
		c.Mount = "transit"
	}
	v := c.vault()
	if err := v.Validate(); err != nil {
		return err
	}
	if c.Key == "" || strings.ContainsAny(c.Key, "/?#% ") {
		return fmt.Errorf("key %q: want a Transit key name such as coffer-kek", c.Key)
	}
	if c.Mount == "" || strings.HasPrefix(c.Mount, "/") || strings.HasSuffix(c.Mount, "/") || strings.ContainsAny(c.Mount, "?#% ") {
		return fmt.Errorf("mount %q: want a mount path such as transit", c.Mount)
	}
	return nil
}

// Wrapper is a Transit-backed master key.
type Wrapper struct {
	cfg  Config
	auth *vault.Auth
	id   string
}

var _ seal.KeyWrapper = (*Wrapper)(nil)

// New returns a Wrapper for cfg. It makes no request: a missing key shows
// at the first Wrap.
func New(cfg Config, logger *slog.Logger) (*Wrapper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("vault transit master key: %w", err)
	}
	c, err := vault.NewClient(cfg.vault(), keystore.Options{})
	if err != nil {
		return nil, fmt.Errorf("vault transit master key: %w", err)
	}
	return &Wrapper{cfg: cfg, auth: vault.NewAuth(cfg.vault(), c, logger), id: "vault-transit:" + cfg.Mount + "/" + cfg.Key}, nil
}

// KeyID implements seal.KeyWrapper: vault-transit:<mount>/<key>. It stays
// the same across key rotations (the version is in each ciphertext).
func (w *Wrapper) KeyID() string { return w.id }

// Wrap implements seal.KeyWrapper.
func (w *Wrapper) Wrap(ctx context.Context, dek []byte) ([]byte, error) {
	s, err := w.write(ctx, "encrypt", map[string]any{"plaintext": base64.StdEncoding.EncodeToString(dek)})
	if err != nil {
		return nil, fmt.Errorf("transit encrypt with %s: %w", w.id, err)
	}
	ct, _ := s.Data["ciphertext"].(string)
	if !strings.HasPrefix(ct, "vault:v") {
		return nil, fmt.Errorf("transit encrypt with %s: no ciphertext in Vault's answer", w.id)
	}
	return []byte(ct), nil
}

// Unwrap implements seal.KeyWrapper. Ciphertext that Vault refuses to
// decrypt (another key, altered, or a version below min_decryption_version)
// fails with an error wrapping seal.ErrDecrypt.
func (w *Wrapper) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	if !validCiphertext(wrapped) {
		return nil, fmt.Errorf("%w: not a Vault Transit ciphertext", seal.ErrDecrypt)
	}
	s, err := w.write(ctx, "decrypt", map[string]any{"ciphertext": string(wrapped)})
	if err != nil {
		if refused(err) {
			return nil, fmt.Errorf("%w: Vault Transit key %s does not decrypt this data key: %s", seal.ErrDecrypt, w.id, detail(err))
		}
		return nil, fmt.Errorf("transit decrypt with %s: %w", w.id, err)
	}
	pt, _ := s.Data["plaintext"].(string)
	dek, err := base64.StdEncoding.DecodeString(pt)
	if err != nil {
		return nil, fmt.Errorf("%w: Vault's plaintext is not base64", seal.ErrDecrypt)
	}
	return dek, nil
}

// Rewrap re-encrypts a wrapped data key under the key's newest version,
// inside Vault.
func (w *Wrapper) Rewrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	if !validCiphertext(wrapped) {
		return nil, fmt.Errorf("%w: not a Vault Transit ciphertext", seal.ErrDecrypt)
	}
	s, err := w.write(ctx, "rewrap", map[string]any{"ciphertext": string(wrapped)})
	if err != nil {
		if refused(err) {
			return nil, fmt.Errorf("%w: Vault Transit key %s does not rewrap this data key: %s", seal.ErrDecrypt, w.id, detail(err))
		}
		return nil, fmt.Errorf("transit rewrap with %s: %w", w.id, err)
	}
	ct, _ := s.Data["ciphertext"].(string)
	if !strings.HasPrefix(ct, "vault:v") {
		return nil, fmt.Errorf("transit rewrap with %s: no ciphertext in Vault's answer", w.id)
	}
	return []byte(ct), nil
}

// validCiphertext accepts vault:v<digits>:<base64> only, so that nothing
// else is ever sent to Vault as ciphertext.
func validCiphertext(b []byte) bool {
	s, ok := strings.CutPrefix(string(b), "vault:v")
	if !ok {
		return false
	}
	ver, body, ok := strings.Cut(s, ":")
	if !ok || ver == "" || strings.Trim(ver, "0123456789") != "" || body == "" {
		return false
	}
	_, err := base64.StdEncoding.DecodeString(body)
	return err == nil
}

// write sends a Transit operation, authenticating again once after a 403.
func (w *Wrapper) write(ctx context.Context, op string, body map[string]any) (*api.Secret, error) {
	path := w.cfg.Mount + "/" + op + "/" + w.cfg.Key
	for attempt := 0; ; attempt++ {
		tok, err := w.auth.Token(ctx)
		if err != nil {
			return nil, err
		}
		s, err := w.auth.Client(tok).Logical().WriteWithContext(ctx, path, body)
		var re *api.ResponseError
		if attempt == 0 && errors.As(err, &re) && re.StatusCode == http.StatusForbidden && w.auth.Reauth(ctx, tok) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if s == nil || s.Data == nil {
			return nil, fmt.Errorf("empty answer from %s", path)
		}
		return s, nil
	}
}

// refused reports whether Vault answered 400: the ciphertext does not
// decrypt under this key (authentication failed, bad version, malformed).
func refused(err error) bool {
	var re *api.ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusBadRequest
}

func detail(err error) string {
	var re *api.ResponseError
	if errors.As(err, &re) {
		return keystore.Detail(strings.Join(re.Errors, "; "))
	}
	return keystore.Detail(err.Error())
}

// Close forgets the Vault token.
func (w *Wrapper) Close() { w.auth.Close() }
