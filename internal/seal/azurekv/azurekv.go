// Package azurekv is a seal.KeyWrapper whose master key is an Azure Key
// Vault key (RSA, or RSA-HSM in Managed HSM/Premium): data keys are wrapped
// with the key's wrapkey operation (RSA-OAEP-256) and unwrapped with
// unwrapkey, through the official SDK (azkeys) and azidentity's default
// credential. The private key never leaves Key Vault.
//
// A wrapped data key is 0x01 || len(version) || version || ciphertext: it
// records the key version that wrapped it, so data keys wrapped before a
// rotation of the key (a new version) still unwrap with that version.
package azurekv

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"coffer/internal/keystore"
	ksazure "coffer/internal/keystore/azure"
	"coffer/internal/seal"
)

// Config is the Key Vault master key's configuration.
type Config struct {
	VaultURL string `yaml:"vault_url"` // https://NAME.vault.azure.net
	Key      string `yaml:"key"`       // key name
	TenantID string `yaml:"tenant_id"`
	CAFile   string `yaml:"ca_file"`
	// DisableChallengeResourceVerification: see keystore/azure.Config.
	DisableChallengeResourceVerification bool `yaml:"disable_challenge_resource_verification"`

	// Not in YAML, for tests.
	Credential azcore.TokenCredential `yaml:"-"`
	MaxRetries int32                  `yaml:"-"`
}

var keyName = regexp.MustCompile(`^[0-9A-Za-z-]{1,127}$`)

// Validate checks the configuration; errors name the key.
func (c *Config) Validate() error {
	ks := ksazure.Config{VaultURL: c.VaultURL, DisableChallengeResourceVerification: c.DisableChallengeResourceVerification}
	if err := ks.Validate(); err != nil {
		return err
	}
	if !keyName.MatchString(c.Key) {
		return fmt.Errorf("key %q: want a Key Vault key name (1-127 letters, digits and '-')", c.Key)
	}
	return nil
}

// Wrapper is a Key Vault-backed master key.
type Wrapper struct {
	cfg Config
	c   *azkeys.Client
	id  string
}

var _ seal.KeyWrapper = (*Wrapper)(nil)

// New returns a Wrapper for cfg. It makes no request.
func New(cfg Config) (*Wrapper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("azure key vault master key: %w", err)
	}
	co, err := ksazure.ClientOptions(cfg.CAFile, 1<<20, cfg.MaxRetries)
	if err != nil {
		return nil, fmt.Errorf("azure key vault master key: %w", err)
	}
	cred, err := ksazure.Credential(cfg.Credential, cfg.TenantID)
	if err != nil {
		return nil, fmt.Errorf("azure key vault master key: credential: %w", err)
	}
	vaultURL := strings.TrimSuffix(cfg.VaultURL, "/")
	c, err := azkeys.NewClient(vaultURL, cred, &azkeys.ClientOptions{
		ClientOptions: co, DisableChallengeResourceVerification: cfg.DisableChallengeResourceVerification,
	})
	if err != nil {
		return nil, fmt.Errorf("azure key vault master key: %w", err)
	}
	u, _ := url.Parse(vaultURL)
	return &Wrapper{cfg: cfg, c: c, id: "azure-kv:" + u.Host + "/keys/" + cfg.Key}, nil
}

// KeyID implements seal.KeyWrapper: azure-kv:<vault host>/keys/<name>. It
// stays the same across key versions (the version is in each wrapped key).
func (w *Wrapper) KeyID() string { return w.id }

const format byte = 1

var alg = azkeys.EncryptionAlgorithmRSAOAEP256

// Wrap implements seal.KeyWrapper, with the key's current version.
func (w *Wrapper) Wrap(ctx context.Context, dek []byte) ([]byte, error) {
	r, err := w.c.WrapKey(ctx, w.cfg.Key, "", azkeys.KeyOperationParameters{Algorithm: &alg, Value: dek}, nil)
	if err != nil {
		return nil, fmt.Errorf("key vault wrapkey with %s: %w", w.id, apiErr(err))
	}
	if r.KID == nil || len(r.Result) == 0 {
		return nil, fmt.Errorf("key vault wrapkey with %s: no key id or result in the answer", w.id)
	}
	ver := r.KID.Version()
	if r.KID.Name() != w.cfg.Key || ver == "" || len(ver) > 255 {
		return nil, fmt.Errorf("key vault wrapkey with %s: the answer names key %q version %q", w.id, r.KID.Name(), ver)
	}
	out := make([]byte, 0, 2+len(ver)+len(r.Result))
	out = append(out, format, byte(len(ver)))
	out = append(out, ver...)
	return append(out, r.Result...), nil
}

var versionPattern = regexp.MustCompile(`^[0-9A-Za-z]{1,255}$`)

// Unwrap implements seal.KeyWrapper. A wrapped key that this key (at the
// recorded version) does not unwrap fails with an error wrapping
// seal.ErrDecrypt.
func (w *Wrapper) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 3 || wrapped[0] != format || len(wrapped) < 2+int(wrapped[1])+1 {
		return nil, fmt.Errorf("%w: not a Key Vault-wrapped data key", seal.ErrDecrypt)
	}
	ver := string(wrapped[2 : 2+int(wrapped[1])])
	if !versionPattern.MatchString(ver) {
		return nil, fmt.Errorf("%w: the wrapped data key names a malformed key version", seal.ErrDecrypt)
	}
	ct := wrapped[2+len(ver):]
	r, err := w.c.UnwrapKey(ctx, w.cfg.Key, ver, azkeys.KeyOperationParameters{Algorithm: &alg, Value: ct}, nil)
	if err != nil {
		var re *azcore.ResponseError
		if errors.As(err, &re) && (re.StatusCode == http.StatusBadRequest || re.StatusCode == http.StatusNotFound) {
			return nil, fmt.Errorf("%w: Key Vault key %s (version %s) does not unwrap this data key (HTTP %d %s)",
				seal.ErrDecrypt, w.id, ver, re.StatusCode, keystore.Detail(re.ErrorCode))
		}
		return nil, fmt.Errorf("key vault unwrapkey with %s: %w", w.id, apiErr(err))
	}
	return r.Result, nil
}

// apiErr keeps an SDK error's status and code only.
func apiErr(err error) error {
	var re *azcore.ResponseError
	if errors.As(err, &re) {
		return fmt.Errorf("HTTP %d %s", re.StatusCode, keystore.Detail(re.ErrorCode))
	}
	s, _, _ := strings.Cut(err.Error(), "\n")
	return errors.New(keystore.Detail(s))
}
