package store

import (
	"context"
	"errors"
)

// ErrUnavailable is returned (wrapped) by a shared store that cannot be
// reached or has lost its quorum: the request was not served, and may be
// tried again when the store is back. The API answers it with 503.
var ErrUnavailable = errors.New("store unavailable")

// Change is one committed change of a key, seen by a Watcher.
type Change struct {
	Key     string // the caller's key, as given to Tx.Put or Tx.Delete
	Value   []byte // the new value; nil when Deleted
	Deleted bool
}

// Watcher is the optional capability of a Backend that several servers
// share (etcd): it reports every change committed by any of them, in
// commit order, so that each server can keep its caches and its agents up
// to date. A Backend used by one server only (bbolt) does not need it: its
// one writer knows what it committed.
type Watcher interface {
	// Watch calls fn with the changes under prefix, in commit order,
	// until ctx ends, and then returns ctx's error. It calls fn first with
	// reset true and no changes, and again whenever it may have missed
	// changes (its history was compacted while it was away): the caller
	// then reloads what it keeps from the store. fn is called from one
	// goroutine at a time. Watch survives the store's outages: it resumes
	// where it stopped when the store is back.
	Watch(ctx context.Context, prefix string, fn func(changes []Change, reset bool)) error
}

// Pinger is the optional capability of a Backend that can be unreachable:
// Ping makes one quorum read and says whether the store serves.
type Pinger interface {
	Ping(ctx context.Context) error
}
