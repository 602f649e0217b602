// Package fake is an in-memory container.Runtime for unit tests and the load
// simulator: a test starts and stops containers by hand and every watcher sees
// the same events a real runtime would send.
//
// A Runtime is safe for concurrent use. Watchers never block Start or Stop: each
// has its own unbounded queue.
package fake

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"

	"coffer/internal/container"
)

// ErrNotFound is returned (wrapped) by Inspect for a container that is not running.
var ErrNotFound = errors.New("container not found")

// Runtime is an in-memory container runtime.
type Runtime struct {
	mu       sync.Mutex
	running  map[string]container.Info
	watchers map[*watcher]struct{}
	sig      signals // see signal.go
}

var _ container.Runtime = (*Runtime)(nil)

// New returns an empty runtime.
func New() *Runtime {
	return &Runtime{running: map[string]container.Info{}, watchers: map[*watcher]struct{}{}}
}

// Start marks info as running (replacing a container of the same ID) and
// sends a Started event to every watcher. info is kept as given: Labels are
// the container's own and ImageLabels its image's, already apart (the fake
// does not merge them as Docker does).
func (r *Runtime) Start(info container.Info) {
	info = clone(info)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.running[info.ID] = info
	r.broadcast(container.Event{Kind: container.Started, Info: clone(info)})
}

// Stop removes container id and sends a Stopped event to every watcher. It
// does nothing for an unknown id.
func (r *Runtime) Stop(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	info, ok := r.running[id]
	if !ok {
		return
	}
	delete(r.running, id)
	r.broadcast(container.Event{Kind: container.Stopped, Info: container.Info{ID: id, Name: info.Name}})
}

// Vanish removes container id without telling anyone, as when a runtime's
// event is lost; watchers learn it only at the next Resync.
func (r *Runtime) Vanish(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.running, id)
}

// Resync makes every watcher see a reconnect: a Started event for each running
// container, then Synced.
func (r *Runtime) Resync() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for w := range r.watchers {
		w.push(r.listLocked()...)
	}
}

// Running returns the ids of the running containers, sorted.
func (r *Runtime) Running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Sorted(maps.Keys(r.running))
}

// Watch implements container.Runtime.
func (r *Runtime) Watch(ctx context.Context) (<-chan container.Event, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	w := &watcher{wake: make(chan struct{}, 1)}
	out := make(chan container.Event)
	r.mu.Lock()
	w.push(r.listLocked()...)
	r.watchers[w] = struct{}{}
	r.mu.Unlock()
	go func() {
		defer close(out)
		defer func() {
			r.mu.Lock()
			delete(r.watchers, w)
			r.mu.Unlock()
		}()
		for {
			ev, ok := w.pop()
			if !ok {
				select {
				case <-w.wake:
					continue
				case <-ctx.Done():
					return
				}
			}
			select {
			case out <- ev:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out, nil
}

// Inspect implements container.Runtime.
func (r *Runtime) Inspect(_ context.Context, id string) (container.Info, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	info, ok := r.running[id]
	if !ok {
		return container.Info{}, fmt.Errorf("inspect %q: %w", id, ErrNotFound)
	}
	return clone(info), nil
}

func (r *Runtime) listLocked() []container.Event {
	ids := slices.Sorted(maps.Keys(r.running))
	evs := make([]container.Event, 0, len(ids)+1)
	for _, id := range ids {
		evs = append(evs, container.Event{Kind: container.Started, Info: clone(r.running[id])})
	}
	return append(evs, container.Event{Kind: container.Synced, Running: ids})
}

func (r *Runtime) broadcast(ev container.Event) {
	for w := range r.watchers {
		e := ev
		e.Info = clone(ev.Info)
		w.push(e)
	}
}

// clone copies info's maps, so neither a caller nor a watcher can change
// another's (or the runtime's) labels.
func clone(info container.Info) container.Info {
	info.Labels = maps.Clone(info.Labels)
	info.ImageLabels = maps.Clone(info.ImageLabels)
	return info
}

// watcher is one Watch call's unbounded queue.
type watcher struct {
	mu    sync.Mutex
	queue []container.Event
	wake  chan struct{}
}

func (w *watcher) push(evs ...container.Event) {
	w.mu.Lock()
	w.queue = append(w.queue, evs...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *watcher) pop() (container.Event, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.queue) == 0 {
		return container.Event{}, false
	}
	ev := w.queue[0]
	w.queue[0] = container.Event{}
	w.queue = w.queue[1:]
	return ev, true
}
