// Package bolt is the embedded store.Backend: one bbolt file.
package bolt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	bbolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"coffer/internal/store"
)

var bucket = []byte("coffer")

// Backend is a bbolt-backed store.Backend.
type Backend struct{ db *bbolt.DB }

var _ store.Backend = (*Backend)(nil)

// Open opens or creates the store file at path (mode 0600). A file that is
// not a valid store gives an error wrapping store.ErrCorrupt; the file is
// never modified in that case.
func Open(path string) (*Backend, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, bolterrors.ErrTimeout) {
			return nil, fmt.Errorf("open store %s: locked by another process (is a coffer-server already running on this data dir?)", path)
		}
		if errors.Is(err, bolterrors.ErrInvalid) || errors.Is(err, bolterrors.ErrVersionMismatch) || errors.Is(err, bolterrors.ErrChecksum) {
			return nil, fmt.Errorf("open store %s: %w: %v", path, store.ErrCorrupt, err)
		}
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	// Only a new file gets written at open: an existing store is left
	// byte for byte as it was until a real change.
	var exists bool
	err = db.View(func(tx *bbolt.Tx) error { exists = tx.Bucket(bucket) != nil; return nil })
	if err == nil && !exists {
		err = db.Update(func(tx *bbolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(bucket)
			return err
		})
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Backend{db: db}, nil
}

// View implements store.Backend.
func (b *Backend) View(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.View(func(tx *bbolt.Tx) error { return fn(boltTx{tx.Bucket(bucket)}) })
}

// Update implements store.Backend.
func (b *Backend) Update(ctx context.Context, fn func(store.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return b.db.Update(func(tx *bbolt.Tx) error { return fn(boltTx{tx.Bucket(bucket)}) })
}

// Close implements store.Backend.
func (b *Backend) Close() error { return b.db.Close() }

type boltTx struct{ b *bbolt.Bucket }

func (t boltTx) Get(key string) ([]byte, error) {
	v := t.b.Get([]byte(key))
	if v == nil {
		return nil, fmt.Errorf("%s: %w", key, store.ErrNotFound)
	}
	return v, nil
}

func (t boltTx) Put(key string, value []byte) error { return t.b.Put([]byte(key), value) }

func (t boltTx) Delete(key string) error { return t.b.Delete([]byte(key)) }

func (t boltTx) List(prefix string, fn func(string, []byte) error) error {
	c := t.b.Cursor()
	p := []byte(prefix)
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if err := fn(string(k), v); err != nil {
			return err
		}
	}
	return nil
}
