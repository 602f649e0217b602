// Package seal encrypts secret values at rest with envelope encryption.
//
// Every call to [Seal] draws a fresh random 256-bit data key (DEK), encrypts
// the value with AES-256-GCM under it and wraps the DEK with the master key
// (the key-encryption key, KEK) through a [KeyWrapper]. The value's
// ciphertext is bound to the secret's name and version ([AAD]) as AEAD
// associated data, so a ciphertext moved to another secret or version does
// not open. The DEK is zeroed as soon as it has been used.
//
// # Master keys
//
// [KeyWrapper] is the seam for the master key: [LocalKey] keeps it in a file
// on the server (see [LoadKeyFile] and [CreateKeyFile]); Vault Transit, AWS
// KMS or Azure Key Vault can implement the same three methods. Every envelope
// records the [KeyWrapper.KeyID] it was sealed under, so opening it with
// another master key fails early with a message that names both key ids.
//
// # Errors
//
// Every failure to open an envelope wraps [ErrDecrypt]; the reason given
// never contains key or plaintext bytes.
package seal

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrDecrypt is returned (wrapped) when an envelope or a wrapped key cannot be
// opened: wrong master key, damaged bytes, or associated data that does not
// match (the envelope belongs to another secret or version).
var ErrDecrypt = errors.New("cannot decrypt")

// KeyWrapper wraps and unwraps data keys with a master key. Implementations
// are safe for concurrent use.
type KeyWrapper interface {
	// Wrap encrypts (and authenticates) dek under the master key.
	Wrap(ctx context.Context, dek []byte) ([]byte, error)
	// Unwrap reverses Wrap. It returns an error wrapping ErrDecrypt when
	// wrapped was made under another key or has been altered.
	Unwrap(ctx context.Context, wrapped []byte) ([]byte, error)
	// KeyID is a stable, non-secret identifier of the master key, recorded
	// in each envelope to detect a wrong key early.
	KeyID() string
}

// Envelope is a sealed value as it is stored: the master key's id, the
// wrapped DEK, and the value encrypted under the DEK.
type Envelope struct {
	KeyID      string `json:"kid"`   // KeyWrapper.KeyID of the master key
	WrappedDEK []byte `json:"wdek"`  // DEK wrapped by the master key
	Nonce      []byte `json:"nonce"` // AES-GCM nonce for Ciphertext
	Ciphertext []byte `json:"ct"`    // value sealed under the DEK, with tag
}

// DEKSize is the size of a data key in bytes (AES-256).
const DEKSize = 32

// aadDomain separates Coffer's secret-value AAD from any other use of the keys.
const aadDomain = "coffer/secret/v1"

// AAD returns the associated data that binds a ciphertext to one version of
// one secret. The encoding is unambiguous: the domain string
// "coffer/secret/v1", a zero byte, the name's length as a 4-byte big-endian
// integer, the name, and the version as an 8-byte big-endian integer.
func AAD(secretName string, version uint64) []byte {
	b := make([]byte, 0, len(aadDomain)+1+4+len(secretName)+8)
	b = append(b, aadDomain...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(secretName)))
	b = append(b, secretName...)
	b = binary.BigEndian.AppendUint64(b, version)
	return b
}

// Seal encrypts plaintext under a fresh data key bound to aad (see [AAD]) and
// wraps that key with kw. The data key is zeroed before Seal returns.
func Seal(ctx context.Context, kw KeyWrapper, plaintext, aad []byte) (Envelope, error) {
	dek := make([]byte, DEKSize)
	defer clear(dek)
	if _, err := rand.Read(dek); err != nil {
		return Envelope{}, fmt.Errorf("seal: generate data key: %w", err)
	}
	aead, err := newGCM(dek)
	if err != nil {
		return Envelope{}, fmt.Errorf("seal: %w", err)
	}
	nonce := make([]byte, aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return Envelope{}, fmt.Errorf("seal: generate nonce: %w", err)
	}
	wrapped, err := kw.Wrap(ctx, dek)
	if err != nil {
		return Envelope{}, fmt.Errorf("seal: wrap data key with master key %s: %w", kw.KeyID(), err)
	}
	return Envelope{
		KeyID:      kw.KeyID(),
		WrappedDEK: wrapped,
		Nonce:      nonce,
		Ciphertext: aead.Seal(nil, nonce, plaintext, aad),
	}, nil
}

// Open unwraps env's data key with kw and decrypts the value, checking it
// against aad. Every failure (another master key, a flipped bit, aad of
// another secret or version) returns an error wrapping [ErrDecrypt]. The
// caller owns the returned plaintext and should zero it when done.
func Open(ctx context.Context, kw KeyWrapper, env Envelope, aad []byte) ([]byte, error) {
	if r, ok := kw.(Keyring); ok { // a Ring opens envelopes of any key it holds
		if w, ok := r.ForKeyID(env.KeyID); ok {
			kw = w
		}
	}
	if kid := kw.KeyID(); env.KeyID != kid {
		return nil, fmt.Errorf("%w: value was sealed under master key %q but the loaded master key is %q (wrong key file?)",
			ErrDecrypt, env.KeyID, kid)
	}
	dek, err := kw.Unwrap(ctx, env.WrappedDEK)
	if err != nil {
		if errors.Is(err, ErrDecrypt) {
			return nil, fmt.Errorf("open: data key: %w", err)
		}
		return nil, fmt.Errorf("%w: unwrap data key: %w", ErrDecrypt, err)
	}
	defer clear(dek)
	if len(dek) != DEKSize {
		return nil, fmt.Errorf("%w: data key is %d bytes, want %d", ErrDecrypt, len(dek), DEKSize)
	}
	aead, err := newGCM(dek)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecrypt, err)
	}
	if len(env.Nonce) != aead.NonceSize() {
		return nil, fmt.Errorf("%w: nonce is %d bytes, want %d", ErrDecrypt, len(env.Nonce), aead.NonceSize())
	}
	plaintext, err := aead.Open(nil, env.Nonce, env.Ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: value is damaged or belongs to another secret or version", ErrDecrypt)
	}
	return plaintext, nil
}

// newGCM returns AES-256-GCM with the standard 12-byte nonce under key.
func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("gcm: %w", err)
	}
	return aead, nil
}
