package catalog

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"time"

	"coffer/internal/seal"
	"coffer/internal/secret"
	"coffer/internal/store"
)

// SecretMeta describes a secret without its value.
type SecretMeta struct {
	Name     string        `json:"name"`
	Current  uint64        `json:"current_version"`
	Created  time.Time     `json:"created"`
	Updated  time.Time     `json:"updated"`
	Versions []VersionMeta `json:"versions"` // kept versions, newest first
}

// VersionMeta describes one kept version.
type VersionMeta struct {
	Version uint64    `json:"version"`
	Created time.Time `json:"created"`
	Author  string    `json:"author"`
}

func secretKey(name string) string { return "secret/" + name }

// tombKey remembers the last version of a deleted secret.
func tombKey(name string) string { return "tomb/" + name }

// versionKey separates name and version with a NUL, which no name contains,
// so that listing the versions of "a" never sees those of "a/b".
func versionKey(name string, v uint64) string { return fmt.Sprintf("sv/%s\x00%020d", name, v) }

// Put stores value as a new version of secret name, written by author. It
// trims versions beyond MaxVersions. value is not kept or zeroed.
func (c *Catalog) Put(ctx context.Context, name string, value []byte, author string) (SecretMeta, error) {
	if err := secret.ValidateName(name); err != nil {
		return SecretMeta{}, err
	}
	switch {
	case len(value) == 0:
		return SecretMeta{}, ErrEmpty
	case len(value) > c.cfg.MaxValueSize:
		return SecretMeta{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(value), c.cfg.MaxValueSize)
	}
	var meta SecretMeta
	now := time.Now().UTC()
	err := c.cfg.Store.Update(ctx, func(tx store.Tx) error {
		err := getJSON(tx, secretKey(name), &meta)
		switch {
		case errors.Is(err, store.ErrNotFound):
			// A secret created again continues the numbering of the one
			// deleted before it: a (name, version) pair is never reused.
			meta = SecretMeta{Name: name, Created: now}
			if err := getJSON(tx, tombKey(name), &meta.Current); err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
		case err != nil:
			return err
		}
		meta.Current++
		meta.Updated = now
		env, err := seal.Seal(ctx, c.cfg.Key, value, seal.AAD(name, meta.Current))
		if err != nil {
			return fmt.Errorf("seal: %w", err)
		}
		if err := putJSON(tx, versionKey(name, meta.Current), env); err != nil {
			return err
		}
		meta.Versions = append([]VersionMeta{{Version: meta.Current, Created: now, Author: author}}, meta.Versions...)
		for len(meta.Versions) > c.cfg.MaxVersions {
			old := meta.Versions[len(meta.Versions)-1]
			if err := tx.Delete(versionKey(name, old.Version)); err != nil {
				return err
			}
			meta.Versions = meta.Versions[:len(meta.Versions)-1]
		}
		return putJSON(tx, secretKey(name), meta)
	})
	if err != nil {
		return SecretMeta{}, fmt.Errorf("put secret %s: %w", name, err)
	}
	c.log.Info("secret version stored", "secret", name, "version", meta.Current, "author", author)
	c.notify(Change{Kind: SecretPut, Secret: name, Version: meta.Current})
	return meta, nil
}

// Alphabets for Generate.
var Alphabets = map[string]string{
	"alnum":     "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
	"alpha":     "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
	"numeric":   "0123456789",
	"hex":       "0123456789abcdef",
	"base64url": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
	"printable": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&()*+,-./:;<=>?@[]^_{|}~",
}

// MaxGenerateLength bounds Generate's length.
const MaxGenerateLength = 4096

// Generate stores a new version whose value is length random characters from
// the named alphabet (default "alnum"), made on the server and never returned.
func (c *Catalog) Generate(ctx context.Context, name string, length int, alphabet, author string) (SecretMeta, error) {
	if alphabet == "" {
		alphabet = "alnum"
	}
	chars, ok := Alphabets[alphabet]
	if !ok {
		return SecretMeta{}, fmt.Errorf("%w: unknown alphabet %q (use one of %s)", ErrInvalid, alphabet, alphabetNames())
	}
	if length < 1 || length > MaxGenerateLength {
		return SecretMeta{}, fmt.Errorf("%w: length %d: must be 1 to %d", ErrInvalid, length, MaxGenerateLength)
	}
	v := make(secret.Value, length)
	defer v.Zero()
	max := big.NewInt(int64(len(chars)))
	for i := range v {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return SecretMeta{}, err
		}
		v[i] = chars[n.Int64()]
	}
	return c.Put(ctx, name, v, author)
}

func alphabetNames() string {
	return "alnum, alpha, numeric, hex, base64url, printable"
}

// List returns the metadata (without version lists) of the secrets whose
// names start with prefix, in name order.
func (c *Catalog) List(ctx context.Context, prefix string) ([]SecretMeta, error) {
	out := []SecretMeta{}
	err := c.cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.List(secretKey(prefix), func(_ string, v []byte) error {
			var m SecretMeta
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("%w: %v", store.ErrCorrupt, err)
			}
			m.Versions = nil
			out = append(out, m)
			return nil
		})
	})
	return out, err
}

// Show returns a secret's metadata with its kept versions.
func (c *Catalog) Show(ctx context.Context, name string) (SecretMeta, error) {
	if err := secret.ValidateName(name); err != nil {
		return SecretMeta{}, err
	}
	var m SecretMeta
	err := c.cfg.Store.View(ctx, func(tx store.Tx) error { return getJSON(tx, secretKey(name), &m) })
	if errors.Is(err, store.ErrNotFound) {
		return SecretMeta{}, fmt.Errorf("secret %s: %w", name, ErrNotFound)
	}
	return m, err
}

// Delete removes a secret and all its versions. Bindings that name it stay,
// and deliver nothing until the secret exists again.
func (c *Catalog) Delete(ctx context.Context, name string) error {
	if err := secret.ValidateName(name); err != nil {
		return err
	}
	err := c.cfg.Store.Update(ctx, func(tx store.Tx) error {
		var meta SecretMeta
		if err := getJSON(tx, secretKey(name), &meta); err != nil {
			return err
		}
		if err := putJSON(tx, tombKey(name), meta.Current); err != nil {
			return err
		}
		var keys []string
		err := tx.List("sv/"+name+"\x00", func(k string, _ []byte) error { keys = append(keys, k); return nil })
		if err != nil {
			return err
		}
		for _, k := range append(keys, secretKey(name)) {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("secret %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return err
	}
	c.log.Info("secret deleted", "secret", name)
	c.notify(Change{Kind: SecretDeleted, Secret: name})
	return nil
}

// Current returns a secret's current version, or ErrNotFound.
func (c *Catalog) Current(ctx context.Context, name string) (uint64, error) {
	m, err := c.Show(ctx, name)
	return m.Current, err
}

// Value opens one version of a secret. It is for delivery to agents only;
// the caller owns the returned value and must Zero it.
func (c *Catalog) Value(ctx context.Context, name string, version uint64) (secret.Value, error) {
	var env seal.Envelope
	err := c.cfg.Store.View(ctx, func(tx store.Tx) error { return getJSON(tx, versionKey(name, version), &env) })
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("secret %s version %d: %w", name, version, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	pt, err := seal.Open(ctx, c.cfg.Key, env, seal.AAD(name, version))
	if err != nil {
		return nil, fmt.Errorf("open secret %s version %d: %w", name, version, err)
	}
	return secret.Value(pt), nil
}

func (c *Catalog) notify(ch Change) {
	if c.cfg.OnChange != nil {
		c.cfg.OnChange(ch)
	}
}
