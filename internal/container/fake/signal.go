package fake

import (
	"context"
	"fmt"
	"slices"

	"coffer/internal/container"
)

var _ container.Signaler = (*Runtime)(nil)

// signals records what Signal sent, by container id.
type signals struct {
	sent   map[string][]string
	onSend func(id, sig string) // called before Signal returns, without the lock
}

// Signal implements container.Signaler: it records sig for a running
// container and calls the OnSignal hook; an unknown id gives ErrNotFound.
func (r *Runtime) Signal(_ context.Context, id, sig string) error {
	r.mu.Lock()
	if _, ok := r.running[id]; !ok {
		r.mu.Unlock()
		return fmt.Errorf("fake: signal %s %s: %w", sig, id, ErrNotFound)
	}
	if r.sig.sent == nil {
		r.sig.sent = map[string][]string{}
	}
	r.sig.sent[id] = append(r.sig.sent[id], sig)
	hook := r.sig.onSend
	r.mu.Unlock()
	if hook != nil {
		hook(id, sig)
	}
	return nil
}

// Signals returns the signals sent to container id, in order.
func (r *Runtime) Signals(id string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.sig.sent[id])
}

// OnSignal sets a hook called on every Signal (nil: none).
func (r *Runtime) OnSignal(fn func(id, sig string)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sig.onSend = fn
}
