package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"coffer/internal/secret"
	"coffer/internal/store"
)

// Deleting a secret is a soft delete: the secret stops being delivered at
// once (containers lose the file, as for any deletion), its metadata moves
// under deletedKey and its sealed versions stay, for DeletedRetention.
// Until then Undelete brings it back with the same versions, and a Put
// brings it back with a new one; Purge destroys it at once. Once the
// retention is over it is purged: by PurgeExpired (at Open and on
// PurgeLoop's timer), and treated as purged by every call meanwhile.

// Delete deletes a live secret, restorably (see above).
func (c *Catalog) Delete(ctx context.Context, name string) error {
	_, err := c.SoftDelete(ctx, name, false)
	return err
}

// SoftDelete is Delete that returns the deleted secret's metadata (with
// PurgeAfter) and can be a dry run: checked, nothing stored.
func (c *Catalog) SoftDelete(ctx context.Context, name string, dryRun bool) (SecretMeta, error) {
	if err := secret.ValidateName(name); err != nil {
		return SecretMeta{}, err
	}
	var meta SecretMeta
	err := c.update(ctx, dryRun, func(tx store.Tx) error {
		m, state, err := c.load(tx, name, true)
		if err != nil {
			return err
		}
		if state == Deleted {
			return fmt.Errorf("secret %s: %w: it is already deleted (restorable until %s; purge destroys it now)",
				name, ErrNotFound, m.Deleted.Add(c.cfg.DeletedRetention).Format(time.RFC3339))
		}
		if err := c.mustBeLive(name, m, state); err != nil {
			return err
		}
		m.Deleted = c.now()
		if err := putJSON(tx, deletedKey(name), m); err != nil {
			return err
		}
		meta = m
		return tx.Delete(secretKey(name))
	})
	if err != nil {
		return SecretMeta{}, err
	}
	meta.PurgeAfter = meta.Deleted.Add(c.cfg.DeletedRetention)
	if !dryRun {
		c.log.Info("secret deleted", "secret", name, "purge_after", meta.PurgeAfter)
		c.notify(Change{Kind: SecretDeleted, Secret: name})
	}
	return meta, nil
}

// Undelete restores a deleted secret with the versions it had; its current
// version is delivered again to the containers its bindings select.
// ErrNotFound if it is not deleted (never was, or was purged), ErrConflict
// if it is live.
func (c *Catalog) Undelete(ctx context.Context, name string, dryRun bool) (SecretMeta, error) {
	if err := secret.ValidateName(name); err != nil {
		return SecretMeta{}, err
	}
	var meta SecretMeta
	err := c.update(ctx, dryRun, func(tx store.Tx) error {
		m, state, err := c.load(tx, name, true)
		if err != nil {
			return err
		}
		switch state {
		case Live:
			return fmt.Errorf("secret %s: %w: it is not deleted", name, ErrConflict)
		case Absent:
			return fmt.Errorf("secret %s: %w: no deleted secret of this name (never deleted, or purged: its values are gone)", name, ErrNotFound)
		}
		m.Deleted = time.Time{}
		if err := tx.Delete(deletedKey(name)); err != nil {
			return err
		}
		meta = m
		return putJSON(tx, secretKey(name), m)
	})
	if err != nil {
		return SecretMeta{}, err
	}
	if !dryRun {
		c.log.Info("secret restored", "secret", name, "version", meta.Current)
		c.notify(Change{Kind: SecretPut, Secret: name, Version: meta.Current})
	}
	return meta, nil
}

// Purge destroys a secret, live or deleted, with all its versions, at
// once. It reports the state the secret was in (Live or Deleted).
func (c *Catalog) Purge(ctx context.Context, name string, dryRun bool) (State, error) {
	if err := secret.ValidateName(name); err != nil {
		return Absent, err
	}
	var was State
	err := c.update(ctx, dryRun, func(tx store.Tx) error {
		m, state, err := c.load(tx, name, true)
		if err != nil {
			return err
		}
		if state == Absent {
			return fmt.Errorf("secret %s: %w", name, ErrNotFound)
		}
		was = state
		return c.purgeTx(tx, name, m.Current)
	})
	if err != nil {
		return Absent, err
	}
	if !dryRun {
		c.log.Info("secret purged", "secret", name, "was", was.String())
		if was == Live {
			c.notify(Change{Kind: SecretDeleted, Secret: name})
		}
	}
	return was, nil
}

// ListDeleted returns the metadata (without version lists, with
// PurgeAfter) of the deleted secrets whose names start with prefix, in
// name order. Those past their retention are left out.
func (c *Catalog) ListDeleted(ctx context.Context, prefix string) ([]SecretMeta, error) {
	out := []SecretMeta{}
	err := c.cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.List(deletedKey(prefix), func(_ string, v []byte) error {
			var m SecretMeta
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("%w: %v", store.ErrCorrupt, err)
			}
			if c.expired(m) {
				return nil
			}
			m.Versions = nil
			m.PurgeAfter = m.Deleted.Add(c.cfg.DeletedRetention)
			out = append(out, m)
			return nil
		})
	})
	return out, err
}

// PurgeExpired purges the deleted secrets whose retention is over, one
// transaction each (a store's transactions may be limited in size), and
// returns how many it purged.
func (c *Catalog) PurgeExpired(ctx context.Context) (int, error) {
	var names []string
	err := c.cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.List("deleted-secret/", func(k string, v []byte) error {
			var m SecretMeta
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("%s: %w: %v", k, store.ErrCorrupt, err)
			}
			if c.expired(m) {
				names = append(names, strings.TrimPrefix(k, "deleted-secret/"))
			}
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("purge deleted secrets: %w", err)
	}
	n := 0
	for _, name := range names {
		purged := false
		err := c.cfg.Store.Update(ctx, func(tx store.Tx) error {
			// Checked again: a secret restored or put meanwhile is left alone.
			var m SecretMeta
			err := getJSON(tx, deletedKey(name), &m)
			if errors.Is(err, store.ErrNotFound) || err == nil && !c.expired(m) {
				return nil
			}
			if err != nil {
				return err
			}
			purged = true
			return c.purgeTx(tx, name, m.Current)
		})
		if err != nil {
			return n, fmt.Errorf("purge deleted secret %s: %w", name, err)
		}
		if purged {
			n++
			c.log.Info("deleted secret purged: its retention is over", "secret", name)
		}
	}
	return n, nil
}

// PurgeLoop runs PurgeExpired every interval until ctx ends.
func (c *Catalog) PurgeLoop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := c.PurgeExpired(ctx); err != nil && !errors.Is(err, context.Canceled) {
				c.log.Error("purging deleted secrets", "err", err)
			}
		}
	}
}
