package broker

import (
	"context"
	"errors"

	"coffer/internal/store"
)

// Resync forgets the current versions the broker knew and sends every
// connected container its state again where it changed: for a broker on a
// store shared by several servers, after changes may have been missed (its
// watch was compacted away). Containers whose files are unchanged get
// nothing.
func (b *Broker) Resync() {
	b.mu.Lock()
	// Cached values are dropped, not zeroed: outboxes may still hold them.
	clear(b.values)
	clear(b.current)
	set := b.cfg.Catalog.Bindings()
	for _, c := range b.containers {
		b.regrant(c, set)
		b.push(c)
	}
	b.mu.Unlock()
	b.backpressure()
}

// versionFor is currentVersion that tells a secret without a version (0,
// true) from a store that cannot answer (false): then nothing is cached
// and the container must keep what it holds, not lose the file.
func (b *Broker) versionFor(name string) (uint64, bool) {
	if v, ok := b.current[name]; ok {
		return v, true
	}
	v, err := b.cfg.Catalog.Current(context.Background(), name)
	if err != nil {
		if storeAway(err) {
			return 0, false
		}
		v = 0
	}
	b.current[name] = v
	return v, true
}

// storeAway reports an error of a store that cannot serve (a shared
// store's outage), as opposed to an answer.
func storeAway(err error) bool { return errors.Is(err, store.ErrUnavailable) }
