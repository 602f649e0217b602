// Package keystoretest is the conformance suite every keystore.Keystore
// passes (Run), and Memory, an in-memory upstream for tests of the code that
// uses keystores (the broker, end-to-end tests).
package keystoretest

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"

	"coffer/internal/keystore"
	"coffer/internal/secret"
)

// Memory is an in-memory upstream. Items are created and changed with Set,
// removed with Delete; SetDown and SetAccess simulate an outage and lost
// credentials; Hint sends a push hint. It implements keystore.Hinter.
type Memory struct {
	name string
	max  int

	mu       sync.Mutex
	items    map[string]*memItem
	down     bool
	noAccess bool
	closed   bool
	reads    int
	checks   int
	hints    chan []string
}

type memItem struct {
	version  int
	value    []byte
	disabled bool
}

var (
	_ keystore.Keystore = (*Memory)(nil)
	_ keystore.Hinter   = (*Memory)(nil)
)

// NewMemory returns an empty upstream named name (used in its errors) with
// the given size cap (0: keystore.DefaultMaxValueSize).
func NewMemory(name string, maxValueSize int) *Memory {
	if maxValueSize <= 0 {
		maxValueSize = keystore.DefaultMaxValueSize
	}
	return &Memory{name: name, max: maxValueSize, items: map[string]*memItem{}, hints: make(chan []string, 16)}
}

// Set creates item or gives it a new version holding a copy of value.
func (m *Memory) Set(item string, value []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	it := m.items[item]
	if it == nil {
		it = &memItem{}
		m.items[item] = it
	}
	clear(it.value)
	it.version++
	it.value = append([]byte(nil), value...)
}

// Delete removes item.
func (m *Memory) Delete(item string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if it := m.items[item]; it != nil {
		clear(it.value)
	}
	delete(m.items, item)
}

// Disable marks item disabled (true) or enabled again.
func (m *Memory) Disable(item string, disabled bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if it := m.items[item]; it != nil {
		it.disabled = disabled
	}
}

// SetDown makes every call fail as unreachable (true) or work again.
func (m *Memory) SetDown(down bool) { m.mu.Lock(); m.down = down; m.mu.Unlock() }

// SetAccess makes every call fail as access lost (false) or work again.
func (m *Memory) SetAccess(ok bool) { m.mu.Lock(); m.noAccess = !ok; m.mu.Unlock() }

// Hint sends a push hint for items (none: all), dropping it if the channel is full.
func (m *Memory) Hint(items ...string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	select {
	case m.hints <- items:
	default:
	}
}

// Calls returns how many Read and Check calls were made.
func (m *Memory) Calls() (reads, checks int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reads, m.checks
}

// Hints implements keystore.Hinter.
func (m *Memory) Hints() <-chan []string { return m.hints }

// ValidateItem implements keystore.Keystore: any item ParseRef accepts.
func (m *Memory) ValidateItem(item string) error {
	_, err := keystore.ParseRef("x:" + item)
	if err == nil && strings.Contains(item, "#") {
		err = fmt.Errorf("%w: item contains '#'", keystore.ErrInvalidRef)
	}
	return err
}

func (m *Memory) fail(item string) error {
	switch {
	case m.closed:
		return keystore.Errorf(m.name, item, keystore.ErrUnreachable, "keystore is closed")
	case m.down:
		return keystore.Errorf(m.name, item, keystore.ErrUnreachable, "connection refused (simulated)")
	case m.noAccess:
		return keystore.Errorf(m.name, item, keystore.ErrAccessLost, "credentials rejected (simulated)")
	}
	return nil
}

func (m *Memory) state(item string) (*memItem, error) {
	it := m.items[item]
	switch {
	case it == nil:
		return nil, keystore.Errorf(m.name, item, keystore.ErrNotFound, "no such item")
	case it.disabled:
		return nil, keystore.Errorf(m.name, item, keystore.ErrDisabled, "item is disabled")
	}
	return it, nil
}

// Read implements keystore.Keystore.
func (m *Memory) Read(ctx context.Context, item string) (keystore.Item, error) {
	if err := ctx.Err(); err != nil {
		return keystore.Item{}, keystore.Errorf(m.name, item, keystore.ErrUnreachable, "%w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads++
	if err := m.fail(item); err != nil {
		return keystore.Item{}, err
	}
	it, err := m.state(item)
	if err != nil {
		return keystore.Item{}, err
	}
	if len(it.value) > m.max {
		return keystore.Item{}, keystore.Errorf(m.name, item, keystore.ErrTooLarge, "%d bytes, the cap is %d", len(it.value), m.max)
	}
	return keystore.Item{Version: strconv.Itoa(it.version), Value: secret.Value(append([]byte(nil), it.value...))}, nil
}

// Check implements keystore.Keystore.
func (m *Memory) Check(ctx context.Context, items []string) (map[string]keystore.State, error) {
	if err := ctx.Err(); err != nil {
		return nil, keystore.Errorf(m.name, "", keystore.ErrUnreachable, "%w", err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.checks++
	if err := m.fail(""); err != nil {
		return nil, err
	}
	out := make(map[string]keystore.State, len(items))
	for _, item := range items {
		if it, err := m.state(item); err != nil {
			out[item] = keystore.State{Err: err}
		} else {
			out[item] = keystore.State{Version: strconv.Itoa(it.version)}
		}
	}
	return out, nil
}

// Close implements keystore.Keystore.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.closed {
		m.closed = true
		close(m.hints)
	}
	return nil
}

// Items returns the names of the items held (for tests).
func (m *Memory) Items() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.items))
}
