package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"coffer/internal/identity"
	"coffer/internal/seal"
	"coffer/internal/store"
	"coffer/internal/store/bolt"
	"coffer/internal/store/etcd"
)

// migratedKey marks a prefix that holds a finished migration.
const migratedKey = "meta/migrated"

// MigrateStats is what Migrate did.
type MigrateStats struct {
	Keys    int  // keys of the bolt store
	Copied  int  // keys written to etcd by this run
	Already bool // the prefix held this migration, finished: nothing was written
}

// migrated is the record at migratedKey.
type migrated struct {
	From string    `json:"from"`
	Keys int       `json:"keys"`
	Time time.Time `json:"time"`
}

// migrateBatch bounds the keys and bytes of one etcd transaction of a
// migration (etcd's defaults are 128 operations and 1.5 MiB).
const (
	migrateBatchKeys  = 64
	migrateBatchBytes = 1 << 20
)

// Migrate copies the bolt store of data dir from, which no server may
// hold, into cfg's etcd prefix, with the CA of from (its key sealed under
// the master key, as servers on etcd keep it). The values are copied as
// they are: sealed under the same master key, which cfg must name (by
// default from's master.key). The prefix must be empty, or hold a part of
// this same migration (a run that was interrupted: it goes on), or all of
// it (nothing is written): anything else is refused and nothing is
// written. The bolt store is not changed.
func Migrate(ctx context.Context, cfg Config, from string, log *slog.Logger) (MigrateStats, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var stats MigrateStats
	if cfg.Store != StoreEtcd || len(cfg.Etcd.Endpoints) == 0 {
		return stats, errors.New("migrate: --to etcd:ENDPOINTS is required")
	}
	if err := cfg.Validate(); err != nil {
		return stats, err
	}
	abs, err := filepath.Abs(from)
	if err != nil {
		return stats, err
	}
	boltPath := filepath.Join(abs, storeFile)
	if _, err := os.Stat(boltPath); err != nil {
		return stats, fmt.Errorf("migrate: no bolt store in %s: %w", abs, err)
	}
	for _, f := range []string{identity.CACertFile, identity.CAKeyFile} {
		if _, err := os.Stat(filepath.Join(abs, f)); err != nil {
			return stats, fmt.Errorf("migrate: the data dir's CA: %w", err)
		}
	}
	src := cfg
	src.DataDir, src.Store = abs, StoreBolt
	ring, err := openSeal(ctx, src, false, nil, log)
	if err != nil {
		return stats, err
	}
	defer ring.Close()
	bs, err := bolt.Open(boltPath)
	if err != nil {
		return stats, fmt.Errorf("migrate: %w (stop the server on %s first)", err, abs)
	}
	defer bs.Close()
	if err := checkStoreSeal(ctx, bs, ring, abs, log); err != nil {
		return stats, err
	}
	ca, _, err := identity.LoadOrCreateCA(abs) // both files exist: only loads
	if err != nil {
		return stats, fmt.Errorf("migrate: CA: %w", err)
	}
	want := map[string][]byte{}
	if err := bs.View(ctx, func(tx store.Tx) error {
		return tx.List("", func(k string, v []byte) error { want[k] = bytes.Clone(v); return nil })
	}); err != nil {
		return stats, fmt.Errorf("migrate: read %s: %w", boltPath, err)
	}
	stats.Keys = len(want)

	ec := cfg.Etcd
	ec.Logger = log
	es, err := etcd.Open(ctx, ec)
	if err != nil {
		return stats, err
	}
	defer es.Close()
	have := map[string][]byte{}
	if err := es.View(ctx, func(tx store.Tx) error {
		return tx.List("", func(k string, v []byte) error { have[k] = bytes.Clone(v); return nil })
	}); err != nil {
		return stats, fmt.Errorf("migrate: read %s: %w", storeWhere(cfg), err)
	}
	// Only this migration may be there already.
	for _, k := range slices.Sorted(maps.Keys(have)) {
		switch k {
		case migratedKey:
			var m migrated
			if json.Unmarshal(have[k], &m) != nil || m.From != abs {
				return stats, fmt.Errorf("migrate: %s holds a migration from elsewhere (%s); refusing to migrate into a non-empty prefix; nothing was written", storeWhere(cfg), have[k])
			}
			continue
		case clusterCAKey:
			var rec clusterCA
			if json.Unmarshal(have[k], &rec) != nil || rec.Cert != string(ca.CertPEM) {
				return stats, fmt.Errorf("migrate: %s holds another CA; refusing to migrate into a non-empty prefix; nothing was written", storeWhere(cfg))
			}
			continue
		}
		if v, ok := want[k]; !ok || !bytes.Equal(v, have[k]) {
			return stats, fmt.Errorf("migrate: %s is not empty (it holds %q, which is not this store's): refusing to migrate into a non-empty prefix; nothing was written", storeWhere(cfg), k)
		}
	}
	if _, done := have[migratedKey]; done {
		stats.Already = true
		return stats, nil
	}
	var batch []string
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := es.Update(ctx, func(tx store.Tx) error {
			for _, k := range batch {
				if err := tx.Put(k, want[k]); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("migrate: write: %w (run the same command again to go on)", err)
		}
		stats.Copied += len(batch)
		batch, size = nil, 0
		return nil
	}
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if _, ok := have[k]; ok {
			continue
		}
		if len(batch) >= migrateBatchKeys || size+len(want[k]) > migrateBatchBytes {
			if err := flush(); err != nil {
				return stats, err
			}
		}
		batch, size = append(batch, k), size+len(k)+len(want[k])
	}
	if err := flush(); err != nil {
		return stats, err
	}
	if _, ok := have[clusterCAKey]; !ok {
		keyPEM, err := ca.KeyPEM()
		if err != nil {
			return stats, err
		}
		env, err := seal.Seal(ctx, ring, keyPEM, caKeyAAD)
		clear(keyPEM)
		if err != nil {
			return stats, fmt.Errorf("migrate: seal the CA key: %w", err)
		}
		raw, _ := json.Marshal(clusterCA{Cert: string(ca.CertPEM), Key: env})
		if err := es.Update(ctx, func(tx store.Tx) error { return putIfAbsent(tx, clusterCAKey, raw) }); err != nil {
			return stats, fmt.Errorf("migrate: store the CA: %w", err)
		}
	}
	raw, _ := json.Marshal(migrated{From: abs, Keys: stats.Keys, Time: time.Now().UTC()})
	if err := es.Update(ctx, func(tx store.Tx) error { return tx.Put(migratedKey, raw) }); err != nil {
		return stats, fmt.Errorf("migrate: %w", err)
	}
	return stats, nil
}
