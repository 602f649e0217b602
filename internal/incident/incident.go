// Package incident holds what Coffer does on the worst day: the lockdown
// state (every write refused except by admins, deliveries optionally
// frozen) kept in the store, and the chain-of-custody report of a secret
// built from the audit trail. The actions themselves (quarantine a host,
// revoke a leaked version, revoke people) are carried out by the broker,
// the catalog, the fleet and the tokens; the API orchestrates and audits
// them (internal/api/handlers_incident.go).
package incident

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"coffer/internal/store"
)

// lockdownKey holds the Lockdown as JSON while one is in force.
const lockdownKey = "meta/lockdown"

// Lockdown is a lockdown in force.
type Lockdown struct {
	Since  time.Time `json:"since"`
	By     string    `json:"by"`     // the admin who declared it
	Reason string    `json:"reason"` // why (free text, never a value)
	// Freeze stops deliveries too: no container gets a new file, a
	// rotation or a revocation until the lockdown is lifted (a quarantine
	// still removes a host's files).
	Freeze bool `json:"freeze,omitempty"`
}

// State is the lockdown state, cached in memory and kept in the store. It
// is safe for concurrent use; Current costs a lock, no I/O.
type State struct {
	st store.Backend

	mu  sync.RWMutex
	cur *Lockdown
}

// Open loads the state from st.
func Open(ctx context.Context, st store.Backend) (*State, error) {
	s := &State{st: st}
	err := st.View(ctx, func(tx store.Tx) error {
		raw, err := tx.Get(lockdownKey)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		var l Lockdown
		if err := json.Unmarshal(raw, &l); err != nil {
			return fmt.Errorf("%s: %w: %v", lockdownKey, store.ErrCorrupt, err)
		}
		s.cur = &l
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("lockdown state: %w", err)
	}
	return s, nil
}

// Current returns the lockdown in force, or nil.
func (s *State) Current() *Lockdown {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.cur == nil {
		return nil
	}
	l := *s.cur
	return &l
}

// Declare puts l in force (replacing a lockdown in force).
func (s *State) Declare(ctx context.Context, l Lockdown) error {
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	if err := s.st.Update(ctx, func(tx store.Tx) error { return tx.Put(lockdownKey, b) }); err != nil {
		return fmt.Errorf("declare lockdown: %w", err)
	}
	s.mu.Lock()
	s.cur = &l
	s.mu.Unlock()
	return nil
}

// Lift ends the lockdown in force; it returns the one that was (nil: none).
func (s *State) Lift(ctx context.Context) (*Lockdown, error) {
	prev := s.Current()
	if prev == nil {
		return nil, nil
	}
	err := s.st.Update(ctx, func(tx store.Tx) error {
		err := tx.Delete(lockdownKey)
		if errors.Is(err, store.ErrNotFound) {
			return nil
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("lift lockdown: %w", err)
	}
	s.mu.Lock()
	s.cur = nil
	s.mu.Unlock()
	return prev, nil
}
