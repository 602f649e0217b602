package server

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"coffer/internal/keystore"
	"coffer/internal/seal"
	"coffer/internal/store"
)

// hashKeyKey holds, sealed under the master key, the key of the content
// hashes that stand for versions of upstreams without versions (CyberArk
// CCP): the same on every start, so that a restart does not make every
// such item look changed, and never derived from a value.
const hashKeyKey = "meta/keystore-hash-key"

var hashKeyAAD = []byte("coffer/keystore/hash-key/v1")

// openKeystores opens the configured upstreams (no network I/O: a server
// starts while an upstream is down) and returns each one's poll interval.
func openKeystores(ctx context.Context, cfg Config, st store.Backend, master seal.KeyWrapper, log *slog.Logger) (keystore.Set, map[string]time.Duration, error) {
	if len(cfg.Keystores.Upstreams) == 0 {
		return nil, nil, nil
	}
	hashKey, err := loadHashKey(ctx, st, master)
	if err != nil {
		return nil, nil, err
	}
	defer clear(hashKey)
	set, err := cfg.Keystores.Open(log, hashKey)
	if err != nil {
		return nil, nil, fmt.Errorf("config: %w", err)
	}
	intervals := map[string]time.Duration{}
	for _, u := range cfg.Keystores.Upstreams {
		intervals[u.Name] = u.PollInterval
		log.Info("keystore upstream configured", "upstream", u.Name, "type", u.Type, "poll_interval", u.PollInterval)
	}
	return set, intervals, nil
}

// loadHashKey returns the installation's hash key, making it on first use.
func loadHashKey(ctx context.Context, st store.Backend, master seal.KeyWrapper) ([]byte, error) {
	var key []byte
	err := st.Update(ctx, func(tx store.Tx) error {
		clear(key)
		key = nil
		raw, err := tx.Get(hashKeyKey)
		if err == nil {
			var env seal.Envelope
			if err := json.Unmarshal(raw, &env); err != nil {
				return fmt.Errorf("%s: %w: %v", hashKeyKey, store.ErrCorrupt, err)
			}
			key, err = seal.Open(ctx, master, env, hashKeyAAD)
			return err
		}
		if !errors.Is(err, store.ErrNotFound) {
			return err
		}
		key = make([]byte, 32)
		rand.Read(key)
		env, err := seal.Seal(ctx, master, key, hashKeyAAD)
		if err != nil {
			return err
		}
		b, err := json.Marshal(env)
		if err != nil {
			return err
		}
		return tx.Put(hashKeyKey, b)
	})
	if err != nil {
		clear(key)
		return nil, fmt.Errorf("keystore hash key: %w", err)
	}
	return key, nil
}
