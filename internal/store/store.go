// Package store defines the Backend seam under Coffer's server: a small
// transactional key-value store holding ciphertext and metadata only.
//
// The embedded implementation is bbolt (package store/bolt); a backend for
// several servers (etcd) can be added behind the same interface.
package store

import (
	"context"
	"errors"
)

// ErrNotFound is returned by Tx.Get for a missing key.
var ErrNotFound = errors.New("not found")

// ErrCorrupt is returned (wrapped) when the store's files cannot be read as a
// Coffer store.
var ErrCorrupt = errors.New("store is corrupt")

// Backend is a transactional key-value store. Keys are '/'-separated strings.
// Implementations are safe for concurrent use; Update transactions are serialized.
type Backend interface {
	// View runs fn in a read-only transaction.
	View(ctx context.Context, fn func(Tx) error) error
	// Update runs fn in a read-write transaction, committed durably when fn
	// returns nil and rolled back otherwise.
	Update(ctx context.Context, fn func(Tx) error) error
	Close() error
}

// Tx is one transaction. Byte slices it returns are valid only inside the
// transaction; copy them to keep them.
type Tx interface {
	Get(key string) ([]byte, error) // ErrNotFound if absent
	Put(key string, value []byte) error
	Delete(key string) error // no error if absent
	// List calls fn for every key with the given prefix, in key order.
	List(prefix string, fn func(key string, value []byte) error) error
}
