package broker

import (
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
	b.staleCurrent("") // answers read before now may predate what was missed
	set := b.cfg.Catalog.Bindings()
	first := b.holdWakes()
	for _, c := range b.containers {
		b.regrant(c, set)
		b.push(c)
	}
	b.releaseWakes(first)
	b.mu.Unlock()
	b.backpressure()
}

// storeAway reports an error of a store that cannot serve (a shared
// store's outage), as opposed to an answer.
func storeAway(err error) bool { return errors.Is(err, store.ErrUnavailable) }
