package catalog

import (
	"context"
	"fmt"
	"time"

	"coffer/internal/secret"
	"coffer/internal/store"
)

// Link says where a linked secret's value comes from: an item of an
// upstream keystore (package keystore). A linked secret is delivered,
// bound, rolled out and audited like a stored one; its versions are the
// upstream's, numbered by Coffer in the order it saw them.
//
// The value of the current upstream version is kept sealed in the store
// like a stored secret's (so that a server restarted while the upstream is
// unreachable still serves its containers); the values of older versions
// are destroyed as soon as a newer one is stored, and the current one when
// the link is revoked or removed.
type Link struct {
	From     string `json:"from"`          // the reference as given: UPSTREAM:ITEM[#KEY]
	Upstream string `json:"upstream"`      // configured upstream name
	Item     string `json:"item"`          // item in the upstream's terms
	Key      string `json:"key,omitempty"` // JSON key picked from the item; "" for the whole item
	// Dynamic is set for a link to an upstream that issues credentials
	// (type vault-dynamic): no value is stored, every container gets its
	// own lease (see LinkDynamic and package lease).
	Dynamic bool `json:"dynamic,omitempty"`
	// Revoked, when set, says why the upstream no longer serves the item
	// (deleted, disabled, access lost): the secret is then delivered to no
	// container until the item is back. The reason names the upstream and
	// the item, never a value.
	Revoked   string    `json:"revoked,omitempty"`
	RevokedAt time.Time `json:"revoked_at,omitzero"`
}

// LinkedVersion is one upstream version of a linked secret, as read by
// the server.
type LinkedVersion struct {
	Upstream string       // the upstream's version id (opaque)
	Value    secret.Value // the item's value (or its key's); not kept or zeroed
}

// linkedErr is the ErrConflict for a write that a linked secret refuses.
func linkedErr(meta SecretMeta, what string) error {
	return fmt.Errorf("%w: secret %s is linked to %s: %s; change it in the upstream, or unlink it (coffer secret unlink)",
		ErrConflict, meta.Name, meta.Link.From, what)
}

// LinkResult is what LinkSecret did.
type LinkResult struct {
	SecretMeta
	Was     State // where the name stood before
	Changed bool  // a new version was stored (false: the link already held this upstream version)
}

// LinkSecret makes name a secret linked to l whose current value is v,
// written by author: a new secret, a new version of a secret linked to
// the same or another item (relinked), or nothing when the link already
// holds v's upstream version. A stored secret is refused (ErrConflict: it
// has values of its own), and so is a deleted one (undelete or purge it
// first). A dry run checks everything and stores nothing.
func (c *Catalog) LinkSecret(ctx context.Context, name string, l Link, v LinkedVersion, author string, dryRun bool) (LinkResult, error) {
	if err := secret.ValidateName(name); err != nil {
		return LinkResult{}, err
	}
	if err := c.checkLinkedValue(name, l, v); err != nil {
		return LinkResult{}, err
	}
	l.Revoked, l.RevokedAt = "", time.Time{}
	var r LinkResult
	now := c.now()
	err := c.update(ctx, dryRun, func(tx store.Tx) error {
		r = LinkResult{} // a store may run fn again
		meta, state, err := c.load(tx, name, true)
		if err != nil {
			return err
		}
		r.Was = state
		switch {
		case state == Deleted:
			return fmt.Errorf("%w: secret %s was deleted; undelete or purge it before linking it", ErrConflict, name)
		case state == Live && meta.Template != nil:
			return templatedErr(meta, "it cannot be linked")
		case state == Live && meta.Link == nil:
			return fmt.Errorf("%w: secret %s is a stored secret with values of its own; delete it (coffer secret rm --purge) before linking the name", ErrConflict, name)
		case state == Absent:
			meta = SecretMeta{Name: name, Current: meta.Current, Created: now}
		case *meta.Link == l && len(meta.Versions) > 0 && meta.Versions[0].Upstream == v.Upstream:
			r.SecretMeta = meta
			return nil // already there
		}
		meta.Link = &l
		if err := c.addLinkedVersion(ctx, tx, &meta, v, author, now); err != nil {
			return err
		}
		r.SecretMeta, r.Changed = meta, true
		return nil
	})
	if err != nil {
		return LinkResult{}, fmt.Errorf("link secret %s: %w", name, err)
	}
	if dryRun || !r.Changed {
		return r, nil
	}
	c.log.Info("secret linked", "secret", name, "from", l.From, "version", r.Current, "upstream_version", v.Upstream, "author", author)
	c.notify(Change{Kind: SecretPut, Secret: name, Version: r.Current})
	return r, nil
}

func (c *Catalog) checkLinkedValue(name string, l Link, v LinkedVersion) error {
	switch {
	case l.From == "" || l.Upstream == "" || l.Item == "":
		return fmt.Errorf("%w: link of %s: from, upstream and item are required", ErrInvalid, name)
	case v.Upstream == "":
		return fmt.Errorf("%w: link of %s: the upstream version is empty", ErrInvalid, name)
	case len(v.Value) == 0:
		return fmt.Errorf("%w: %s's value is empty", ErrEmpty, l.From)
	case len(v.Value) > c.cfg.MaxValueSize:
		return fmt.Errorf("%w: %s's value is %d bytes, the limit is %d", ErrTooLarge, l.From, len(v.Value), c.cfg.MaxValueSize)
	}
	return nil
}

// addLinkedVersion seals v as the next version of meta's linked secret
// and destroys the values of the versions before it (their metadata stays,
// up to MaxVersions).
func (c *Catalog) addLinkedVersion(ctx context.Context, tx store.Tx, meta *SecretMeta, v LinkedVersion, author string, now time.Time) error {
	prev := meta.Current
	if err := c.addVersion(ctx, tx, meta, v.Value, VersionMeta{Created: now, Author: author, Upstream: v.Upstream}); err != nil {
		return err
	}
	if prev == 0 {
		return nil
	}
	return tx.List(versionPrefix(meta.Name), func(k string, _ []byte) error {
		if k != versionKey(meta.Name, meta.Current) {
			return tx.Delete(k)
		}
		return nil
	})
}

// SyncLinked stores v as the new current version of the live secret name
// if it is still linked to from and does not hold that upstream version
// yet (or is revoked: the item is back). It is what the server does when
// an upstream reports a change; author names the upstream
// ("keystore:vault"). A secret that was unlinked, relinked elsewhere or
// deleted in the meantime is left alone (Changed false, nil error).
func (c *Catalog) SyncLinked(ctx context.Context, name, from string, v LinkedVersion, author string) (LinkResult, error) {
	var r LinkResult
	now := c.now()
	err := c.update(ctx, false, func(tx store.Tx) error {
		r = LinkResult{}
		meta, state, err := c.load(tx, name, true)
		if err != nil {
			return err
		}
		r.Was, r.SecretMeta = state, meta
		if state != Live || meta.Link == nil || meta.Link.From != from {
			return nil
		}
		if err := c.checkLinkedValue(name, *meta.Link, v); err != nil {
			return err
		}
		if len(meta.Versions) > 0 && meta.Versions[0].Upstream == v.Upstream && (meta.Link.Revoked == "" || meta.Versions[0].Revoked != "") {
			return nil // held already, or that very version was revoked (a leak): wait for the next one
		}
		meta.Link.Revoked, meta.Link.RevokedAt = "", time.Time{}
		if err := c.addLinkedVersion(ctx, tx, &meta, v, author, now); err != nil {
			return err
		}
		r.SecretMeta, r.Changed = meta, true
		return nil
	})
	if err != nil {
		return LinkResult{}, fmt.Errorf("sync linked secret %s: %w", name, err)
	}
	if r.Changed {
		c.log.Info("linked secret changed upstream", "secret", name, "from", from, "version", r.Current, "upstream_version", v.Upstream)
		c.notify(Change{Kind: SecretPut, Secret: name, Version: r.Current})
	}
	return r, nil
}

// RevokeLinked marks the live secret name, if it is still linked to from,
// as revoked for reason (the upstream deleted or disabled the item, or
// Coffer lost access to it): its current value is destroyed and every
// container loses it; the metadata stays, and the next upstream version
// brings it back. It reports whether anything changed.
func (c *Catalog) RevokeLinked(ctx context.Context, name, from, reason string) (bool, error) {
	changed := false
	now := c.now()
	err := c.update(ctx, false, func(tx store.Tx) error {
		changed = false
		meta, state, err := c.load(tx, name, true)
		if err != nil {
			return err
		}
		if state != Live || meta.Link == nil || meta.Link.From != from || meta.Link.Revoked != "" {
			return nil
		}
		meta.Link.Revoked, meta.Link.RevokedAt = reason, now
		meta.Updated = now
		if err := tx.Delete(versionKey(name, meta.Current)); err != nil {
			return err
		}
		changed = true
		return putJSON(tx, secretKey(name), meta)
	})
	if err != nil {
		return false, fmt.Errorf("revoke linked secret %s: %w", name, err)
	}
	if changed {
		c.log.Warn("linked secret revoked by its upstream", "secret", name, "from", from, "reason", reason)
		c.notify(Change{Kind: SecretDeleted, Secret: name})
	}
	return changed, nil
}

// Unlink removes the linked secret name (live or deleted) at once, as
// Purge does: its value is destroyed, every container loses it, and the
// name may later be stored or linked again (its numbering goes on). A
// stored secret is refused (ErrConflict: use Delete or Purge). It returns
// the link that was removed.
func (c *Catalog) Unlink(ctx context.Context, name string, dryRun bool) (Link, State, error) {
	if err := secret.ValidateName(name); err != nil {
		return Link{}, Absent, err
	}
	var (
		was  State
		link Link
	)
	err := c.update(ctx, dryRun, func(tx store.Tx) error {
		meta, state, err := c.load(tx, name, true)
		if err != nil {
			return err
		}
		was = state
		switch {
		case state == Absent:
			return c.mustBeLive(name, meta, state)
		case meta.Link == nil:
			return fmt.Errorf("%w: secret %s is a stored secret, not a linked one; remove it with coffer secret rm", ErrConflict, name)
		}
		link = *meta.Link
		return c.purgeTx(tx, name, meta.Current)
	})
	if err != nil {
		return Link{}, was, fmt.Errorf("unlink secret %s: %w", name, err)
	}
	if !dryRun {
		c.log.Info("secret unlinked", "secret", name, "from", link.From, "was", was.String())
		if was == Live {
			c.notify(Change{Kind: SecretDeleted, Secret: name})
		}
	}
	return link, was, nil
}

// Linked returns the live linked secrets (with their current upstream
// version as Versions[0]), in name order.
func (c *Catalog) Linked(ctx context.Context) ([]SecretMeta, error) {
	var out []SecretMeta
	err := c.cfg.Store.View(ctx, func(tx store.Tx) error {
		return tx.List(secretKey(""), func(_ string, v []byte) error {
			var m SecretMeta
			if err := unmarshalMeta(v, &m); err != nil {
				return err
			}
			if m.Link != nil {
				if len(m.Versions) > 1 {
					m.Versions = m.Versions[:1]
				}
				out = append(out, m)
			}
			return nil
		})
	})
	return out, err
}
