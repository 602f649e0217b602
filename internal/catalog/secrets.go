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
	// Deleted is when a deleted secret was deleted; zero for a live one.
	Deleted time.Time `json:"deleted,omitzero"`
	// PurgeAfter is when a deleted secret's versions are destroyed (Deleted
	// plus the retention); set in answers only, never stored.
	PurgeAfter time.Time `json:"purge_after,omitzero"`
	// Link is set for a secret linked to an upstream keystore item (see
	// LinkSecret); nil for a stored secret.
	Link *Link `json:"link,omitempty"`
	// Template is set for a templated secret (see PutTemplate).
	Template *Template `json:"template,omitempty"`
}

// VersionMeta describes one kept version.
type VersionMeta struct {
	Version uint64    `json:"version"`
	Created time.Time `json:"created"`
	Author  string    `json:"author"`
	// RollbackOf is the version this one is a copy of (Rollback); 0 for a
	// value that was put or generated.
	RollbackOf uint64 `json:"rollback_of,omitempty"`
	// Upstream is, for a linked secret, the upstream's id of this version.
	Upstream string `json:"upstream_version,omitempty"`
	// Revoked, when set, says why this version was revoked (a leak,
	// RevokeVersion): its value is destroyed and it is never delivered
	// again.
	Revoked string `json:"revoked,omitempty"`
	// Inputs are, for a templated secret, the version of each secret this
	// version is rendered from.
	Inputs map[string]uint64 `json:"inputs,omitempty"`
}

// State is where a secret name stands.
type State int

const (
	Absent  State = iota // never stored, or purged
	Live                 // delivered to the containers bound to it
	Deleted              // deleted: restorable with Undelete until it is purged
)

func (s State) String() string {
	switch s {
	case Live:
		return "live"
	case Deleted:
		return "deleted"
	}
	return "absent"
}

func secretKey(name string) string { return "secret/" + name }

// deletedKey holds the metadata of a deleted secret, whose versions stay
// under versionKey until it is purged.
func deletedKey(name string) string { return "deleted-secret/" + name }

// tombKey remembers the last version of a purged secret.
func tombKey(name string) string { return "tomb/" + name }

// versionKey separates name and version with a NUL, which no name contains,
// so that listing the versions of "a" never sees those of "a/b".
func versionKey(name string, v uint64) string { return fmt.Sprintf("sv/%s\x00%020d", name, v) }

func versionPrefix(name string) string { return "sv/" + name + "\x00" }

// load reads where name stands in tx. For Absent, meta.Current is the
// last version the name ever had (0 if none), so that numbering goes on.
// A deleted secret past its retention is Absent; in a write transaction
// (purge true) it is purged on the way.
func (c *Catalog) load(tx store.Tx, name string, purge bool) (SecretMeta, State, error) {
	var meta SecretMeta
	err := getJSON(tx, secretKey(name), &meta)
	if err == nil {
		return meta, Live, nil
	}
	if !errors.Is(err, store.ErrNotFound) {
		return meta, Absent, err
	}
	err = getJSON(tx, deletedKey(name), &meta)
	switch {
	case err == nil && !c.expired(meta):
		return meta, Deleted, nil
	case err == nil:
		if purge {
			if err := c.purgeTx(tx, name, meta.Current); err != nil {
				return meta, Absent, err
			}
		}
		return SecretMeta{Name: name, Current: meta.Current}, Absent, nil
	case !errors.Is(err, store.ErrNotFound):
		return meta, Absent, err
	}
	meta = SecretMeta{Name: name}
	if err := getJSON(tx, tombKey(name), &meta.Current); err != nil && !errors.Is(err, store.ErrNotFound) {
		return meta, Absent, err
	}
	return meta, Absent, nil
}

func (c *Catalog) expired(m SecretMeta) bool {
	return !c.now().Before(m.Deleted.Add(c.cfg.DeletedRetention))
}

// purgeTx destroys every version of name and its metadata, live or
// deleted, and remembers its last version so that numbering goes on.
func (c *Catalog) purgeTx(tx store.Tx, name string, current uint64) error {
	if err := putJSON(tx, tombKey(name), current); err != nil {
		return err
	}
	var keys []string
	err := tx.List(versionPrefix(name), func(k string, _ []byte) error { keys = append(keys, k); return nil })
	if err != nil {
		return err
	}
	for _, k := range append(keys, secretKey(name), deletedKey(name)) {
		if err := tx.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// addVersion seals value as the next version of meta's secret in tx,
// records vm for it and drops versions beyond MaxVersions.
func (c *Catalog) addVersion(ctx context.Context, tx store.Tx, meta *SecretMeta, value []byte, vm VersionMeta) error {
	meta.Current++
	meta.Updated = vm.Created
	vm.Version = meta.Current
	env, err := seal.Seal(ctx, c.cfg.Key, value, seal.AAD(meta.Name, meta.Current))
	if err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	if err := putJSON(tx, versionKey(meta.Name, meta.Current), env); err != nil {
		return err
	}
	meta.Versions = append([]VersionMeta{vm}, meta.Versions...)
	for len(meta.Versions) > c.cfg.MaxVersions {
		old := meta.Versions[len(meta.Versions)-1]
		if err := tx.Delete(versionKey(meta.Name, old.Version)); err != nil {
			return err
		}
		meta.Versions = meta.Versions[:len(meta.Versions)-1]
	}
	return putJSON(tx, secretKey(meta.Name), meta)
}

// errDryRun rolls back a write transaction that was only a rehearsal.
var errDryRun = errors.New("dry run")

// update runs fn in a write transaction, or, for a dry run, runs the very
// same fn and rolls it back: a dry run answers what the change would do
// because it is the change, undone.
func (c *Catalog) update(ctx context.Context, dryRun bool, fn func(store.Tx) error) error {
	err := c.cfg.Store.Update(ctx, func(tx store.Tx) error {
		if err := fn(tx); err != nil {
			return err
		}
		if dryRun {
			return errDryRun
		}
		return nil
	})
	if dryRun && errors.Is(err, errDryRun) {
		return nil
	}
	return err
}

// PutResult is what a Put did: the secret's metadata after it, and
// whether it brought back a deleted secret.
type PutResult struct {
	SecretMeta
	Was      State // where the secret stood before
	Restored bool  // the secret was deleted (restorable): it is live again, its versions kept
}

// Put stores value as a new version of secret name, written by author. It
// trims versions beyond MaxVersions. value is not kept or zeroed.
func (c *Catalog) Put(ctx context.Context, name string, value []byte, author string) (SecretMeta, error) {
	r, err := c.PutVersion(ctx, name, value, author, false)
	return r.SecretMeta, err
}

// PutVersion is Put that also says whether the secret was restored, and
// can be a dry run: everything is checked and nothing is stored.
//
// A secret created again continues the numbering of the one purged before
// it: a (name, version) pair is never reused. A put to a deleted secret
// restores it with its kept versions (as Undelete does) and adds the new
// one.
func (c *Catalog) PutVersion(ctx context.Context, name string, value []byte, author string, dryRun bool) (PutResult, error) {
	if err := secret.ValidateName(name); err != nil {
		return PutResult{}, err
	}
	switch {
	case len(value) == 0:
		return PutResult{}, ErrEmpty
	case len(value) > c.cfg.MaxValueSize:
		return PutResult{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrTooLarge, len(value), c.cfg.MaxValueSize)
	}
	var r PutResult
	now := c.now()
	err := c.update(ctx, dryRun, func(tx store.Tx) error {
		r = PutResult{} // a store may run fn again
		meta, state, err := c.load(tx, name, true)
		if err != nil {
			return err
		}
		r.Was = state
		if meta.Link != nil && state != Absent {
			return linkedErr(meta, "its values come from there")
		}
		if meta.Template != nil && state != Absent {
			return templatedErr(meta, "it has no value of its own")
		}
		switch state {
		case Absent:
			meta = SecretMeta{Name: name, Current: meta.Current, Created: now}
		case Deleted:
			r.Restored = true
			meta.Deleted = time.Time{}
			if err := tx.Delete(deletedKey(name)); err != nil {
				return err
			}
		}
		if err := c.addVersion(ctx, tx, &meta, value, VersionMeta{Created: now, Author: author}); err != nil {
			return err
		}
		r.SecretMeta = meta
		return nil
	})
	if err != nil {
		return PutResult{}, fmt.Errorf("put secret %s: %w", name, err)
	}
	if dryRun {
		return r, nil
	}
	c.log.Info("secret version stored", "secret", name, "version", r.Current, "author", author, "restored", r.Restored)
	c.notify(Change{Kind: SecretPut, Secret: name, Version: r.Current})
	return r, nil
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
	r, err := c.GenerateVersion(ctx, name, length, alphabet, author, false)
	return r.SecretMeta, err
}

// GenerateVersion is Generate as PutVersion is Put.
func (c *Catalog) GenerateVersion(ctx context.Context, name string, length int, alphabet, author string, dryRun bool) (PutResult, error) {
	if alphabet == "" {
		alphabet = "alnum"
	}
	chars, ok := Alphabets[alphabet]
	if !ok {
		return PutResult{}, fmt.Errorf("%w: unknown alphabet %q (use one of %s)", ErrInvalid, alphabet, alphabetNames())
	}
	if length < 1 || length > MaxGenerateLength {
		return PutResult{}, fmt.Errorf("%w: length %d: must be 1 to %d", ErrInvalid, length, MaxGenerateLength)
	}
	v := make(secret.Value, length)
	defer v.Zero()
	max := big.NewInt(int64(len(chars)))
	for i := range v {
		n, err := rand.Int(rand.Reader, max)
		if err != nil {
			return PutResult{}, err
		}
		v[i] = chars[n.Int64()]
	}
	return c.PutVersion(ctx, name, v, author, dryRun)
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
			if err := unmarshalMeta(v, &m); err != nil {
				return err
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
	var state State
	err := c.cfg.Store.View(ctx, func(tx store.Tx) (err error) {
		m, state, err = c.load(tx, name, false)
		return err
	})
	if err != nil {
		return SecretMeta{}, err
	}
	return m, c.mustBeLive(name, m, state)
}

// mustBeLive is nil for a live secret, else ErrNotFound that says whether
// the secret is deleted (and can be restored until when).
func (c *Catalog) mustBeLive(name string, m SecretMeta, state State) error {
	switch state {
	case Live:
		return nil
	case Deleted:
		return fmt.Errorf("secret %s: %w: it was deleted at %s and can be restored (undelete) until %s",
			name, ErrNotFound, m.Deleted.Format(time.RFC3339), m.Deleted.Add(c.cfg.DeletedRetention).Format(time.RFC3339))
	}
	return fmt.Errorf("secret %s: %w", name, ErrNotFound)
}

// Current returns a secret's current deliverable version, or ErrNotFound
// (also for a linked secret its upstream revoked).
func (c *Catalog) Current(ctx context.Context, name string) (uint64, error) {
	m, err := c.Show(ctx, name)
	if err == nil && m.Link != nil && m.Link.Revoked != "" {
		return 0, fmt.Errorf("secret %s: %w: revoked by its upstream: %s", name, ErrNotFound, m.Link.Revoked)
	}
	if err == nil && m.Template != nil && m.Template.Broken != "" {
		return 0, fmt.Errorf("secret %s: %w: its template cannot be rendered: %s", name, ErrNotFound, m.Template.Broken)
	}
	if err == nil && len(m.Versions) > 0 && m.Versions[0].Revoked != "" {
		return 0, fmt.Errorf("secret %s: %w: its current version %d was revoked: %s", name, ErrNotFound, m.Current, m.Versions[0].Revoked)
	}
	return m.Current, err
}

func unmarshalMeta(v []byte, m *SecretMeta) error {
	if err := json.Unmarshal(v, m); err != nil {
		return fmt.Errorf("%w: %v", store.ErrCorrupt, err)
	}
	return nil
}

// Value opens one version of a live secret (never one of a deleted
// secret). It is for delivery to agents only; the caller owns the returned
// value and must Zero it.
func (c *Catalog) Value(ctx context.Context, name string, version uint64) (secret.Value, error) {
	var env seal.Envelope
	var rendered secret.Value
	err := c.cfg.Store.View(ctx, func(tx store.Tx) error {
		var meta SecretMeta
		if err := getJSON(tx, secretKey(name), &meta); err != nil {
			return err
		}
		if meta.Template != nil {
			var err error
			rendered, err = c.renderTemplated(ctx, tx, meta, version)
			return err
		}
		return getJSON(tx, versionKey(name, version), &env)
	})
	if rendered != nil {
		return rendered, nil
	}
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
	c.followTemplates(context.Background(), ch)
}
