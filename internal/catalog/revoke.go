package catalog

import (
	"context"
	"fmt"

	"coffer/internal/secret"
	"coffer/internal/store"
)

// RevokeResult is what RevokeVersion did.
type RevokeResult struct {
	SecretMeta
	WasCurrent bool // the revoked version was the one delivered
}

// RevokeVersion revokes version v of the live secret name (it leaked):
// its value is destroyed, it is never delivered or rolled back to again,
// and its metadata records reason. If v is the current version, every
// container loses the secret until a new version is stored (for a linked
// secret: until the upstream has a new version). A version already
// pruned or revoked is ErrGone.
func (c *Catalog) RevokeVersion(ctx context.Context, name string, v uint64, reason string) (RevokeResult, error) {
	if err := secret.ValidateName(name); err != nil {
		return RevokeResult{}, err
	}
	if reason == "" {
		return RevokeResult{}, fmt.Errorf("%w: a reason is required", ErrInvalid)
	}
	var r RevokeResult
	now := c.now()
	err := c.update(ctx, false, func(tx store.Tx) error {
		r = RevokeResult{}
		meta, state, err := c.load(tx, name, true)
		if err != nil {
			return err
		}
		if err := c.mustBeLive(name, meta, state); err != nil {
			return err
		}
		i := -1
		for j, vm := range meta.Versions {
			if vm.Version == v {
				i = j
			}
		}
		switch {
		case v == 0 || v > meta.Current:
			return fmt.Errorf("secret %s has no version %d (the current version is %d): %w", name, v, meta.Current, ErrNotFound)
		case i < 0:
			return fmt.Errorf("secret %s version %d: %w: it was pruned (only the newest %d are kept), its value is already destroyed", name, v, ErrGone, c.cfg.MaxVersions)
		case meta.Versions[i].Revoked != "":
			return fmt.Errorf("secret %s version %d: %w: it was revoked already (%s)", name, v, ErrGone, meta.Versions[i].Revoked)
		}
		if err := tx.Delete(versionKey(name, v)); err != nil {
			return err
		}
		meta.Versions[i].Revoked = reason
		r.WasCurrent = v == meta.Current
		if r.WasCurrent {
			meta.Updated = now
		}
		r.SecretMeta = meta
		return putJSON(tx, secretKey(name), meta)
	})
	if err != nil {
		return RevokeResult{}, fmt.Errorf("revoke secret %s version %d: %w", name, v, err)
	}
	c.log.Warn("secret version revoked", "secret", name, "version", v, "current", r.WasCurrent, "reason", reason)
	if r.WasCurrent {
		c.notify(Change{Kind: SecretDeleted, Secret: name})
	}
	return r, nil
}
