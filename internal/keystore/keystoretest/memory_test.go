package keystoretest

import (
	"context"
	"errors"
	"sync"
	"testing"

	"coffer/internal/keystore"
)

// memHarness runs the suite against Memory, which proves the suite itself.
type memHarness struct {
	mu  sync.Mutex
	all []*Memory // every instance opened; Put etc. go to all of them
}

func (h *memHarness) Name() string            { return "mem" }
func (h *memHarness) Item(name string) string { return "suite/" + name }
func (h *memHarness) Open(t *testing.T, max int) keystore.Keystore {
	m := NewMemory("mem", max)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.all) > 0 { // share items with the first instance
		m.items = h.all[0].items
	}
	h.all = append(h.all, m)
	t.Cleanup(func() { m.Close() })
	return m
}
func (h *memHarness) each(fn func(*Memory)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, m := range h.all {
		fn(m)
	}
}
func (h *memHarness) Put(t *testing.T, item string, f map[string]string) {
	h.all[0].Set(item, JSON(f))
}
func (h *memHarness) PutRaw(t *testing.T, item string, v []byte) { h.all[0].Set(item, v) }
func (h *memHarness) Delete(t *testing.T, item string)           { h.all[0].Delete(item) }
func (h *memHarness) Disable(t *testing.T, item string)          { h.all[0].Disable(item, true) }
func (h *memHarness) BreakAccess(t *testing.T)                   { h.each(func(m *Memory) { m.SetAccess(false) }) }
func (h *memHarness) RestoreAccess(t *testing.T)                 { h.each(func(m *Memory) { m.SetAccess(true) }) }
func (h *memHarness) Down(t *testing.T)                          { h.each(func(m *Memory) { m.SetDown(true) }) }
func (h *memHarness) Up(t *testing.T)                            { h.each(func(m *Memory) { m.SetDown(false) }) }
func (h *memHarness) BadItems() []string                         { return []string{"a#b", "a b"} }

func TestMemory(t *testing.T) { Run(t, &memHarness{}) }

func TestMemoryHints(t *testing.T) {
	m := NewMemory("mem", 0)
	m.Hint("a", "b")
	if got := <-m.Hints(); len(got) != 2 {
		t.Fatalf("hint %v", got)
	}
	m.Close()
	m.Hint("c") // after Close: dropped, no panic
	if _, ok := <-m.Hints(); ok {
		t.Fatal("Hints not closed by Close")
	}
	if _, err := m.Read(context.Background(), "x"); !errors.Is(err, keystore.ErrUnreachable) {
		t.Fatalf("Read after Close: %v", err)
	}
}
