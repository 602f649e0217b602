package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"coffer/internal/seal"
	"coffer/internal/store"
)

// Store prefixes of what the catalog keeps, for watchers of a store shared
// by several servers.
const (
	SecretPrefix  = "secret/"
	BindingPrefix = "binding/"
)

// errCanaryExists says that the canary appeared between the read that
// found none and the write.
var errCanaryExists = errors.New("the canary exists")

// putCanary writes the canary only if there is none, checked in the same
// transaction: on a store shared by several servers, two servers started
// with different master keys on an empty store cannot both seal it; the
// second finds the first one's canary and is refused as a wrong key.
func putCanary(tx store.Tx, env seal.Envelope) error {
	_, err := tx.Get(canaryKey)
	switch {
	case err == nil:
		return errCanaryExists
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	return putJSON(tx, canaryKey, env)
}

// SecretChange turns a change of a key under SecretPrefix, committed by
// any server, into the Change the broker needs: SecretPut with the
// current version, or SecretDeleted.
func SecretChange(key string, value []byte, deleted bool) (Change, bool, error) {
	name, ok := strings.CutPrefix(key, SecretPrefix)
	if !ok || name == "" {
		return Change{}, false, nil
	}
	if deleted {
		return Change{Kind: SecretDeleted, Secret: name}, true, nil
	}
	var m SecretMeta
	if err := json.Unmarshal(value, &m); err != nil {
		return Change{}, false, fmt.Errorf("%s: %w: %v", key, store.ErrCorrupt, err)
	}
	return Change{Kind: SecretPut, Secret: name, Version: m.Current}, true, nil
}

// BindingChange brings the compiled bindings up to date with a change of
// a key under BindingPrefix committed by any server (this one included),
// as its watch reports it: value is what the key holds after the change.
// It returns the Change to tell the broker of: BindingPut or
// BindingDeleted, and false for a key that is no binding. A value that is
// no binding is ErrCorrupt and changes nothing.
func (c *Catalog) BindingChange(key string, value []byte, deleted bool) (Change, bool, error) {
	name, ok := strings.CutPrefix(key, BindingPrefix)
	if !ok || name == "" {
		return Change{}, false, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	old, had := c.bindings.Get(name)
	if deleted {
		c.bindings = c.bindings.Without(name)
		return Change{Kind: BindingDeleted, Binding: name, Secret: old.Secret}, true, nil
	}
	var b Binding
	if err := json.Unmarshal(value, &b); err != nil {
		return Change{}, false, fmt.Errorf("%s: %w: %v", key, store.ErrCorrupt, err)
	}
	if !had || !reflect.DeepEqual(old, b.Binding) {
		set, err := c.bindings.With(b.Binding)
		if err != nil {
			return Change{}, false, fmt.Errorf("%s: %w", key, err)
		}
		c.bindings = set
	}
	return Change{Kind: BindingPut, Binding: name, Secret: b.Secret}, true, nil
}

// ReloadBindings compiles the bindings in the store again, after changes
// may have been missed.
func (c *Catalog) ReloadBindings(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loadBindings(ctx)
}
