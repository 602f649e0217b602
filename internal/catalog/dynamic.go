package catalog

import (
	"context"
	"fmt"
	"time"

	"coffer/internal/secret"
	"coffer/internal/store"
)

// LinkDynamic makes name a dynamic linked secret: linked to l (l.Dynamic
// set), an upstream path that issues credentials, with no value of its
// own: each container bound to it gets its own lease (package lease). A
// new secret, a secret linked elsewhere (relinked: the values of its
// versions are destroyed, their numbering goes on), or nothing when it is
// already linked to l. A stored secret is refused (ErrConflict), and so is
// a deleted one. A dry run checks everything and stores nothing.
func (c *Catalog) LinkDynamic(ctx context.Context, name string, l Link, author string, dryRun bool) (LinkResult, error) {
	if err := secret.ValidateName(name); err != nil {
		return LinkResult{}, err
	}
	if l.From == "" || l.Upstream == "" || l.Item == "" || !l.Dynamic {
		return LinkResult{}, fmt.Errorf("%w: dynamic link of %s: from, upstream, item and dynamic are required", ErrInvalid, name)
	}
	l.Revoked, l.RevokedAt = "", time.Time{}
	var r LinkResult
	now := c.now()
	err := c.update(ctx, dryRun, func(tx store.Tx) error {
		r = LinkResult{}
		meta, state, err := c.load(tx, name, true)
		if err != nil {
			return err
		}
		r.Was = state
		switch {
		case state == Deleted:
			return fmt.Errorf("%w: secret %s was deleted; undelete or purge it before linking it", ErrConflict, name)
		case state == Live && meta.Link == nil:
			return fmt.Errorf("%w: secret %s is a stored secret with values of its own; delete it (coffer secret rm --purge) before linking the name", ErrConflict, name)
		case state == Absent:
			meta = SecretMeta{Name: name, Current: meta.Current, Created: now}
		case *meta.Link == l:
			r.SecretMeta = meta
			return nil // already there
		}
		// A dynamic secret has no stored value: destroy any the name had
		// (a relink from a static link).
		var keys []string
		if err := tx.List(versionPrefix(name), func(k string, _ []byte) error { keys = append(keys, k); return nil }); err != nil {
			return err
		}
		for _, k := range keys {
			if err := tx.Delete(k); err != nil {
				return err
			}
		}
		meta.Versions = []VersionMeta{}
		// The link itself gets the next version number (it has no value):
		// numbering goes on, and a (name, version) pair is never reused.
		meta.Current++
		meta.Link = &l
		meta.Updated = now
		if err := putJSON(tx, secretKey(name), meta); err != nil {
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
	c.log.Info("secret linked (dynamic: a lease per container)", "secret", name, "from", l.From, "author", author)
	c.notify(Change{Kind: SecretPut, Secret: name, Version: r.Current})
	return r, nil
}
