package authn

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"coffer/internal/store"
)

// Prefix is the store prefix of the token records, for watchers.
const Prefix = "token/"

// Apply brings the cache up to date with a change of a token record that
// another server committed to a shared store (key under Prefix): a
// revoked token stops working here as soon as the change arrives.
func (t *Tokens) Apply(key string, value []byte, deleted bool) error {
	id, ok := strings.CutPrefix(key, Prefix)
	if !ok || id == "" {
		return nil
	}
	if deleted {
		t.mu.Lock()
		delete(t.byID, id)
		t.mu.Unlock()
		return nil
	}
	var s stored
	if err := json.Unmarshal(value, &s); err != nil {
		return fmt.Errorf("%s: %w: %v", key, store.ErrCorrupt, err)
	}
	s.Token.Hash = s.Hash
	t.mu.Lock()
	t.byID[s.ID] = s.Token
	t.mu.Unlock()
	return nil
}

// Reload replaces the cache with the records in the store, after changes
// may have been missed.
func (t *Tokens) Reload(ctx context.Context) error {
	fresh, err := NewTokens(ctx, t.st)
	if err != nil {
		return err
	}
	t.mu.Lock()
	t.byID = fresh.byID
	t.mu.Unlock()
	return nil
}
