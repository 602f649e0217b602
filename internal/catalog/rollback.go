package catalog

import (
	"context"
	"fmt"

	"coffer/internal/seal"
	"coffer/internal/secret"
	"coffer/internal/store"
)

// RollbackResult is what a Rollback did.
type RollbackResult struct {
	SecretMeta
	From uint64 // the version that was current before
	To   uint64 // the version copied
}

// Rollback stores a new version of secret name whose value is that of
// version to, copied inside the server: opened and sealed again under the
// new version, never returned. The new version records RollbackOf. It is
// refused with ErrNotFound if the secret is not live or never had version
// to, ErrGone if that version was pruned (beyond MaxVersions) or destroyed
// (a purge), ErrConflict if it is the current version, and ErrInvalid for
// version 0. A dry run checks everything and stores nothing.
func (c *Catalog) Rollback(ctx context.Context, name string, to uint64, author string, dryRun bool) (RollbackResult, error) {
	if err := secret.ValidateName(name); err != nil {
		return RollbackResult{}, err
	}
	if to == 0 {
		return RollbackResult{}, fmt.Errorf("%w: version 0: versions are numbered from 1", ErrInvalid)
	}
	var r RollbackResult
	now := c.now()
	err := c.update(ctx, dryRun, func(tx store.Tx) error {
		r = RollbackResult{} // a store may run fn again
		meta, state, err := c.load(tx, name, true)
		if err != nil {
			return err
		}
		if err := c.mustBeLive(name, meta, state); err != nil {
			return err
		}
		if meta.Link != nil {
			return linkedErr(meta, "a linked secret holds only the upstream's current version")
		}
		if meta.Template != nil {
			return templatedErr(meta, "it is rendered from its inputs' current versions")
		}
		if err := rollbackTarget(meta, to); err != nil {
			return err
		}
		var env seal.Envelope
		if err := getJSON(tx, versionKey(name, to), &env); err != nil {
			return fmt.Errorf("secret %s version %d: %w: %v", name, to, ErrGone, err)
		}
		v, err := seal.Open(ctx, c.cfg.Key, env, seal.AAD(name, to))
		if err != nil {
			return fmt.Errorf("open secret %s version %d: %w", name, to, err)
		}
		val := secret.Value(v)
		defer val.Zero()
		r.From, r.To = meta.Current, to
		if err := c.addVersion(ctx, tx, &meta, val, VersionMeta{Created: now, Author: author, RollbackOf: to}); err != nil {
			return err
		}
		r.SecretMeta = meta
		return nil
	})
	if err != nil {
		return RollbackResult{}, fmt.Errorf("roll back secret %s: %w", name, err)
	}
	if !dryRun {
		c.log.Info("secret rolled back", "secret", name, "version", r.Current, "from", r.From, "to", r.To, "author", author)
		c.notify(Change{Kind: SecretPut, Secret: name, Version: r.Current})
	}
	return r, nil
}

// rollbackTarget says why version to of meta's secret cannot be rolled
// back to, or nil if it can.
func rollbackTarget(meta SecretMeta, to uint64) error {
	switch {
	case to > meta.Current:
		return fmt.Errorf("secret %s has no version %d (the current version is %d): %w", meta.Name, to, meta.Current, ErrNotFound)
	case to == meta.Current:
		return fmt.Errorf("version %d of secret %s: %w: it is the current version already", to, meta.Name, ErrConflict)
	}
	for _, v := range meta.Versions {
		if v.Version == to {
			return nil
		}
	}
	kept := "none"
	if n := len(meta.Versions); n > 0 {
		kept = fmt.Sprintf("%d to %d", meta.Versions[n-1].Version, meta.Versions[0].Version)
	}
	return fmt.Errorf("version %d of secret %s: %w: it was pruned or destroyed (versions kept: %s)", to, meta.Name, ErrGone, kept)
}
