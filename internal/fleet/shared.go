package fleet

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"coffer/internal/store"
)

// Prefix is the store prefix of the agent records, for watchers.
const Prefix = "agent/"

// create stores a new agent's record in a transaction that finds no record
// of that name: on a store shared by several servers, two enrollments of
// one name on two servers never both succeed.
func (f *Fleet) create(ctx context.Context, a Agent) error {
	return f.cfg.Store.Update(ctx, func(tx store.Tx) error {
		_, err := tx.Get(agentKey(a.Name))
		switch {
		case err == nil:
			return fmt.Errorf("agent %s: %w", a.Name, ErrExists)
		case !errors.Is(err, store.ErrNotFound):
			return err
		}
		b, err := json.Marshal(a)
		if err != nil {
			return err
		}
		return tx.Put(agentKey(a.Name), b)
	})
}

// replace stores a re-enrolled agent's record a over old, in a transaction
// that finds old unchanged in the store (same enrollment, same
// certificates): ErrExists otherwise, and nothing is written.
func (f *Fleet) replace(ctx context.Context, old, a Agent) error {
	return f.cfg.Store.Update(ctx, func(tx store.Tx) error {
		b, err := tx.Get(agentKey(a.Name))
		switch {
		case errors.Is(err, store.ErrNotFound):
			return fmt.Errorf("agent %s: removed meanwhile: %w", a.Name, ErrUnknownAgent)
		case err != nil:
			return err
		}
		var cur Agent
		if err := json.Unmarshal(b, &cur); err != nil {
			return fmt.Errorf("%s: %w: %v", agentKey(a.Name), store.ErrCorrupt, err)
		}
		if !cur.Enrolled.Equal(old.Enrolled) || !slices.Equal(cur.Serials, old.Serials) {
			return fmt.Errorf("agent %s: changed meanwhile: %w", a.Name, ErrExists)
		}
		nb, err := json.Marshal(a)
		if err != nil {
			return err
		}
		return tx.Put(agentKey(a.Name), nb)
	})
}

// mustBeEnrolled is ErrUnknownAgent when the store holds no record of name.
func mustBeEnrolled(tx store.Tx, name string) error {
	_, err := tx.Get(agentKey(name))
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("agent %s: %w", name, ErrUnknownAgent)
	}
	return err
}

// Apply brings the fleet up to date with a change of an agent record that
// another server committed to a shared store (key under Prefix). It
// reports whether the agent was removed, or enrolled again (its previous
// certificates revoked), so that the caller closes its streams here.
func (f *Fleet) Apply(key string, value []byte, deleted bool) (removed bool, err error) {
	name, ok := strings.CutPrefix(key, Prefix)
	if !ok || name == "" {
		return false, nil
	}
	var a Agent
	if !deleted {
		if err := json.Unmarshal(value, &a); err != nil {
			return false, fmt.Errorf("%s: %w: %v", key, store.ErrCorrupt, err)
		}
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	old, had := f.agents[name]
	if deleted {
		delete(f.agents, name)
		return had, nil
	}
	reenrolled := had && !old.Enrolled.Equal(a.Enrolled)
	if had { // last seen is this server's own knowledge
		a.LastSeen, a.Address = old.LastSeen, old.Address
	}
	f.agents[name] = &a
	return reenrolled, nil
}

// Reload replaces the agents with the records in the store, after changes
// may have been missed, and returns the names of those that are gone or
// were enrolled again (their previous certificates revoked).
func (f *Fleet) Reload(ctx context.Context) (removed []string, err error) {
	fresh, err := Open(ctx, f.cfg)
	if err != nil {
		return nil, err
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	for name, old := range f.agents {
		a, ok := fresh.agents[name]
		if !ok || !a.Enrolled.Equal(old.Enrolled) {
			removed = append(removed, name)
		}
		if !ok {
			continue
		}
		a.LastSeen, a.Address = old.LastSeen, old.Address
	}
	f.agents = fresh.agents
	return removed, nil
}
