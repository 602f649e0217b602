// Package memory is an in-memory deliver.Deliverer for unit tests and the load
// simulator. It records, per container, the files the last Apply wanted (with
// copies of their values) and lets a test wait until a condition holds.
//
// Values it holds are zeroed when replaced, removed or released. A Deliverer is
// safe for concurrent use.
package memory

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"coffer/internal/container"
	"coffer/internal/deliver"
	"coffer/internal/secret"
)

// Config tunes a Deliverer. The zero value is ready to use.
type Config struct {
	// OnApply, if set, is called after each successful Apply with the
	// container's id and the files it now holds (copies the hook may keep;
	// their values are not zeroed by the Deliverer).
	OnApply func(containerID string, files []secret.File)
	// Fail, if set, is called before each Apply; a non-nil error makes Apply
	// fail with it and change nothing (to test fail-closed paths).
	Fail func(c container.Info) error
}

// Deliverer records deliveries in memory.
type Deliverer struct {
	cfg Config

	mu       sync.Mutex
	files    map[string]map[string]secret.File // container id → file name → file
	applies  map[string]int
	released map[string]bool
	changed  chan struct{} // closed on a change; nil until a Wait needs it
}

var _ deliver.Deliverer = (*Deliverer)(nil)

// New returns an empty Deliverer.
func New(cfg Config) *Deliverer {
	return &Deliverer{
		cfg:      cfg,
		files:    map[string]map[string]secret.File{},
		applies:  map[string]int{},
		released: map[string]bool{},
	}
}

// Apply implements deliver.Deliverer.
func (d *Deliverer) Apply(ctx context.Context, c container.Info, want []secret.File) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.ID == "" {
		return fmt.Errorf("memory: apply: empty container id")
	}
	seen := make(map[string]bool, len(want))
	d.mu.Lock()
	held := d.files[c.ID] // names held were valid when stored: not checked again
	for _, f := range want {
		if _, ok := held[f.Name]; ok {
			continue
		}
		if err := secret.ValidateFileName(f.Name); err != nil {
			d.mu.Unlock()
			return fmt.Errorf("memory: apply to %s: %w", c.ID, err)
		}
	}
	d.mu.Unlock()
	for _, f := range want {
		if seen[f.Name] {
			return fmt.Errorf("memory: apply to %s: file %q wanted twice", c.ID, f.Name)
		}
		seen[f.Name] = true
	}
	if d.cfg.Fail != nil {
		if err := d.cfg.Fail(c); err != nil {
			return err
		}
	}

	d.mu.Lock()
	next := d.files[c.ID]
	if next == nil {
		next = make(map[string]secret.File, len(want))
		d.files[c.ID] = next
	}
	// The container's map and buffers are reused: a value that fits in
	// the buffer of the file it replaces overwrites it (the rest of the
	// buffer is zeroed); others get a new buffer and the old one is zeroed.
	// Nothing outside the Deliverer holds them: Files and OnApply get copies.
	old := next
	for name, f := range old {
		if !slices.ContainsFunc(want, func(w secret.File) bool { return w.Name == name }) {
			f.Value.Zero()
			delete(old, name)
		}
	}
	for _, f := range want {
		buf := old[f.Name].Value
		if cap(buf) >= len(f.Value) && buf != nil {
			buf = buf[:cap(buf)]
			n := copy(buf, f.Value)
			clear(buf[n:])
			f.Value = buf[:n]
		} else {
			buf.Zero()
			f = copyFile(f)
		}
		next[f.Name] = f
	}
	d.applies[c.ID]++
	delete(d.released, c.ID)
	var snapshot []secret.File
	if d.cfg.OnApply != nil {
		snapshot = make([]secret.File, 0, len(next))
		for _, f := range next {
			snapshot = append(snapshot, copyFile(f))
		}
	}
	d.notifyLocked()
	d.mu.Unlock()

	if d.cfg.OnApply != nil {
		d.cfg.OnApply(c.ID, snapshot)
	}
	return nil
}

// Release implements deliver.Deliverer: it zeroes and forgets the
// container's files.
func (d *Deliverer) Release(_ context.Context, c container.Info) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	zeroAll(d.files[c.ID])
	delete(d.files, c.ID)
	d.released[c.ID] = true
	d.notifyLocked()
	return nil
}

// Files returns copies of the files container id holds, by file name; nil if
// it holds none. The caller may zero the returned values.
func (d *Deliverer) Files(id string) map[string]secret.File {
	d.mu.Lock()
	defer d.mu.Unlock()
	return copyMap(d.files[id])
}

// Applies returns how many times Apply succeeded for container id.
func (d *Deliverer) Applies(id string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.applies[id]
}

// Released reports whether container id was released and not applied since.
func (d *Deliverer) Released(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.released[id]
}

// Containers returns the ids of the containers that hold files (possibly none).
func (d *Deliverer) Containers() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	ids := make([]string, 0, len(d.files))
	for id := range d.files {
		ids = append(ids, id)
	}
	return ids
}

// Wait blocks until cond, called with a read-only view of all containers'
// files (container id → file name → file), returns true, or ctx ends. cond
// runs with the Deliverer locked: it must not call the Deliverer.
func (d *Deliverer) Wait(ctx context.Context, cond func(all map[string]map[string]secret.File) bool) error {
	for {
		d.mu.Lock()
		ok := cond(d.files)
		if d.changed == nil {
			d.changed = make(chan struct{})
		}
		ch := d.changed
		d.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("memory: wait: %w", ctx.Err())
		}
	}
}

// WaitFiles blocks until cond holds for the files of container id (nil when
// it holds none), or ctx ends.
func (d *Deliverer) WaitFiles(ctx context.Context, id string, cond func(files map[string]secret.File) bool) error {
	return d.Wait(ctx, func(all map[string]map[string]secret.File) bool { return cond(all[id]) })
}

// notifyLocked wakes the waiters, if any: the channel is made by the
// first Wait after a change, not on every change.
func (d *Deliverer) notifyLocked() {
	if d.changed != nil {
		close(d.changed)
		d.changed = nil
	}
}

func copyFile(f secret.File) secret.File {
	f.Value = append(secret.Value(nil), f.Value...)
	return f
}

func copyMap(m map[string]secret.File) map[string]secret.File {
	if m == nil {
		return nil
	}
	out := maps.Clone(m)
	for k, f := range out {
		out[k] = copyFile(f)
	}
	return out
}

func zeroAll(m map[string]secret.File) {
	for _, f := range m {
		f.Value.Zero()
	}
}
