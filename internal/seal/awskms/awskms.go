// Package awskms is a seal.KeyWrapper whose master key is an AWS KMS key:
// data keys are wrapped with kms:Encrypt and unwrapped with kms:Decrypt,
// through the official SDK (github.com/aws/aws-sdk-go-v2/service/kms). The
// master key never leaves KMS.
//
// Every call carries an encryption context naming the Coffer installation
// ({"coffer:installation": <installation>, "coffer:purpose": "data-key"}):
// KMS binds it to the ciphertext, so a data key wrapped for one
// installation does not unwrap for another even under the same KMS key, and
// CloudTrail records which installation asked. Decrypt is pinned to the
// configured key (KeyId), so a ciphertext made under some other key the
// credentials can use is refused.
//
// A wrapped data key is 0x01 || KMS CiphertextBlob || 16-byte tag, the tag an
// HMAC-SHA-256 of the blob under a key derived from the data key itself. KMS
// authenticates its blobs, but emulators need not (local-kms ignores the key
// ARN in a blob when KeyId is given); the tag makes any altered byte fail
// with seal.ErrDecrypt whatever KMS does.
package awskms

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"

	awssdk "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/smithy-go"

	ksaws "coffer/internal/keystore/aws"
	"coffer/internal/seal"
)

// Config is the KMS master key's configuration.
type Config struct {
	Region       string `yaml:"region"`
	Profile      string `yaml:"profile"`
	Endpoint     string `yaml:"endpoint"` // endpoint override (VPC endpoint, local-kms in tests)
	CAFile       string `yaml:"ca_file"`
	KeyID        string `yaml:"key_id"`       // key id, key ARN, alias/NAME or alias ARN
	Installation string `yaml:"installation"` // names this installation in the encryption context

	// Not in YAML, for tests.
	LoadOptions []func(*config.LoadOptions) error `yaml:"-"`
	MaxAttempts int                               `yaml:"-"`
}

var installationPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$`)

// Validate checks the configuration; errors name the key.
func (c *Config) Validate() error {
	ks := ksaws.Config{Region: c.Region, Endpoint: c.Endpoint, MaxAttempts: c.MaxAttempts}
	if err := ks.Validate(); err != nil {
		return err
	}
	if c.KeyID == "" {
		return fmt.Errorf("key_id is missing (a KMS key id, ARN or alias/NAME)")
	}
	if !installationPattern.MatchString(c.Installation) {
		return fmt.Errorf("installation %q: want a name for this Coffer installation (letters, digits, ._:/-), e.g. prod-eu", c.Installation)
	}
	return nil
}

// Wrapper is a KMS-backed master key.
type Wrapper struct {
	cfg Config
	c   *kms.Client
	ctx map[string]string
}

var _ seal.KeyWrapper = (*Wrapper)(nil)

// New returns a Wrapper for cfg. It resolves no credentials and makes no
// request.
func New(cfg Config) (*Wrapper, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("aws kms master key: %w", err)
	}
	ac, err := ksaws.LoadSDKConfig(context.Background(), cfg.Region, cfg.Profile, cfg.CAFile, cfg.MaxAttempts, cfg.LoadOptions...)
	if err != nil {
		return nil, fmt.Errorf("aws kms master key: %w", err)
	}
	c := kms.NewFromConfig(ac, func(o *kms.Options) {
		if cfg.Endpoint != "" {
			o.BaseEndpoint = awssdk.String(cfg.Endpoint)
		}
		o.HTTPClient = ksaws.HTTPClient(o.HTTPClient, 1<<20)
	})
	return &Wrapper{cfg: cfg, c: c, ctx: map[string]string{"coffer:installation": cfg.Installation, "coffer:purpose": "data-key"}}, nil
}

// KeyID implements seal.KeyWrapper: aws-kms:<key_id>@<installation>. Both
// parts decide whether a data key unwraps, so a changed installation name
// is reported as another master key.
func (w *Wrapper) KeyID() string { return "aws-kms:" + w.cfg.KeyID + "@" + w.cfg.Installation }

const (
	format  byte = 1
	tagSize      = 16
	tagInfo      = "coffer/seal/awskms/blob-tag/v1"
)

// tag authenticates blob under a key derived from dek.
func tag(dek, blob []byte) []byte {
	kdf := hmac.New(sha256.New, dek)
	kdf.Write([]byte(tagInfo))
	k := kdf.Sum(nil)
	defer clear(k)
	m := hmac.New(sha256.New, k)
	m.Write(blob)
	return m.Sum(nil)[:tagSize]
}

// Wrap implements seal.KeyWrapper.
func (w *Wrapper) Wrap(ctx context.Context, dek []byte) ([]byte, error) {
	out, err := w.c.Encrypt(ctx, &kms.EncryptInput{KeyId: awssdk.String(w.cfg.KeyID), Plaintext: dek, EncryptionContext: w.ctx})
	if err != nil {
		return nil, fmt.Errorf("kms encrypt with %s: %w", w.cfg.KeyID, apiErr(err))
	}
	wrapped := make([]byte, 0, 1+len(out.CiphertextBlob)+tagSize)
	wrapped = append(wrapped, format)
	wrapped = append(wrapped, out.CiphertextBlob...)
	return append(wrapped, tag(dek, out.CiphertextBlob)...), nil
}

// Unwrap implements seal.KeyWrapper. A ciphertext that KMS refuses under
// this key and context fails with an error wrapping seal.ErrDecrypt.
func (w *Wrapper) Unwrap(ctx context.Context, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 1+1+tagSize || wrapped[0] != format {
		return nil, fmt.Errorf("%w: not a KMS-wrapped data key (format %d, %d bytes)", seal.ErrDecrypt, firstByte(wrapped), len(wrapped))
	}
	blob, want := wrapped[1:len(wrapped)-tagSize], wrapped[len(wrapped)-tagSize:]
	out, err := w.c.Decrypt(ctx, &kms.DecryptInput{KeyId: awssdk.String(w.cfg.KeyID), CiphertextBlob: blob, EncryptionContext: w.ctx})
	if err != nil {
		var ae smithy.APIError
		if errors.As(err, &ae) {
			switch ae.ErrorCode() {
			case "InvalidCiphertextException", "IncorrectKeyException", "ValidationException", "SerializationException":
				return nil, fmt.Errorf("%w: KMS key %s does not decrypt this data key for installation %q (%s)",
					seal.ErrDecrypt, w.cfg.KeyID, w.cfg.Installation, ae.ErrorCode())
			}
		}
		return nil, fmt.Errorf("kms decrypt with %s: %w", w.cfg.KeyID, apiErr(err))
	}
	if !hmac.Equal(tag(out.Plaintext, blob), want) {
		clear(out.Plaintext)
		return nil, fmt.Errorf("%w: the wrapped data key was altered", seal.ErrDecrypt)
	}
	return out.Plaintext, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// apiErr keeps an SDK error's code and message only.
func apiErr(err error) error {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return fmt.Errorf("%s: %s", ae.ErrorCode(), ae.ErrorMessage())
	}
	return err
}
