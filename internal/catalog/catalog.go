// Package catalog keeps Coffer's secrets and bindings in a store.Backend:
// secret metadata and versions sealed by envelope encryption (package seal),
// and the bindings that map secrets to containers (package policy).
//
// Values go in through Put and Generate and come out only through Value, which
// the server calls on behalf of agents; no method used for people returns one.
package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"coffer/internal/policy"
	"coffer/internal/seal"
	"coffer/internal/store"
)

// Sentinel errors, wrapped with context.
var (
	ErrNotFound = errors.New("not found")
	ErrTooLarge = errors.New("value too large")
	ErrEmpty    = errors.New("value is empty")
	ErrWrongKey = errors.New("master key does not match this data dir")
	ErrInvalid  = errors.New("invalid request")
	ErrConflict = errors.New("conflict")       // the object is not in the state the request needs
	ErrGone     = errors.New("no longer kept") // a secret version that was pruned or destroyed
)

// DefaultDeletedRetention is how long a deleted secret stays restorable
// when Config.DeletedRetention is zero.
const DefaultDeletedRetention = 7 * 24 * time.Hour

// Config configures a Catalog.
type Config struct {
	Store        store.Backend
	Key          seal.KeyWrapper
	MaxVersions  int // versions kept per secret; default 10
	MaxValueSize int // bytes; default 1 MiB
	Logger       *slog.Logger
	// DeletedRetention is how long a deleted secret keeps its versions and
	// can be restored (Undelete) before it is purged; default
	// DefaultDeletedRetention.
	DeletedRetention time.Duration
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
	// OnChange, if set, is called after every committed change.
	OnChange func(Change)
}

// ChangeKind says what changed.
type ChangeKind int

const (
	SecretPut ChangeKind = iota + 1
	SecretDeleted
	BindingPut
	BindingDeleted
)

// Change tells listeners (the broker) what was committed. A secret that
// stops being deliverable (deleted, soft or not) is SecretDeleted; one that
// becomes deliverable again or gets a new version (put, rollback,
// undelete) is SecretPut with its current version.
type Change struct {
	Kind    ChangeKind
	Secret  string // for secret changes
	Version uint64 // for SecretPut
	Binding string // for binding changes
}

// Catalog is safe for concurrent use.
type Catalog struct {
	cfg Config
	log *slog.Logger

	mu       sync.RWMutex
	bindings *policy.Set                // compiled bindings, updated copy-on-write under mu
	tdeps    map[string]map[string]bool // input secret -> templated secrets reading it (templated.go), under mu
}

const canaryKey = "meta/canary"

var canaryAAD = []byte("coffer/canary/v1")

// Open checks the master key against the store (a canary sealed at first
// start) and loads the bindings.
func Open(ctx context.Context, cfg Config) (*Catalog, error) {
	if cfg.MaxVersions <= 0 {
		cfg.MaxVersions = 10
	}
	if cfg.MaxValueSize <= 0 {
		cfg.MaxValueSize = 1 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.DeletedRetention <= 0 {
		cfg.DeletedRetention = DefaultDeletedRetention
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	c := &Catalog{cfg: cfg, log: cfg.Logger}
	if err := c.checkKey(ctx); err != nil {
		return nil, err
	}
	if err := c.loadBindings(ctx); err != nil {
		return nil, err
	}
	if err := c.loadTemplates(ctx); err != nil {
		return nil, err
	}
	if _, err := c.PurgeExpired(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Catalog) now() time.Time { return c.cfg.Now().UTC() }

func (c *Catalog) checkKey(ctx context.Context) error {
	var raw []byte
	err := c.cfg.Store.View(ctx, func(tx store.Tx) error {
		v, err := tx.Get(canaryKey)
		if err == nil {
			raw = append([]byte(nil), v...)
		}
		return err
	})
	switch {
	case errors.Is(err, store.ErrNotFound):
		env, err := seal.Seal(ctx, c.cfg.Key, []byte("coffer"), canaryAAD)
		if err != nil {
			return fmt.Errorf("seal canary: %w", err)
		}
		err = c.cfg.Store.Update(ctx, func(tx store.Tx) error { return putCanary(tx, env) })
		if errors.Is(err, errCanaryExists) {
			return c.checkKey(ctx) // another server sealed it first: check against that one
		}
		return err
	case err != nil:
		return fmt.Errorf("read canary: %w", err)
	}
	var env seal.Envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return fmt.Errorf("canary: %w: %v", store.ErrCorrupt, err)
	}
	pt, err := seal.Open(ctx, c.cfg.Key, env, canaryAAD)
	if err != nil {
		return fmt.Errorf("%w: the data dir was sealed with key %s, this key is %s (%v)", ErrWrongKey, env.KeyID, c.cfg.Key.KeyID(), err)
	}
	clear(pt)
	return nil
}
