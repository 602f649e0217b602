package agent

import (
	"testing"
	"time"

	cofferv1 "coffer/api/coffer/v1"
	"coffer/internal/container/fake"
	"coffer/internal/deliver/memory"
)

// The value cache: a value is usable once received (an empty one too),
// whether its reference came first or not; when its last reference goes
// after its grace period it is zeroed and forgotten, and within it the
// periodic collection takes it later.
func TestValueCacheLifecycle(t *testing.T) {
	a := New(Config{Runtime: fake.New(), Deliverer: memory.New(memory.Config{}), ValueGrace: time.Hour})
	desired := func(refs ...verKey) *cofferv1.Desired {
		d := &cofferv1.Desired{ContainerId: "c1"}
		for _, k := range refs {
			d.Files = append(d.Files, &cofferv1.FileRef{Secret: k.secret, Version: k.version, File: k.secret})
		}
		return d
	}
	key, empty := verKey{"s", 1}, verKey{"e", 1}
	a.mu.Lock()
	defer a.mu.Unlock()

	d := desired(key, empty)
	a.refLocked(d) // the state came before its values
	if _, err := a.filesLocked(d); err == nil {
		t.Fatal("files of values not received")
	}
	buf := []byte("value")
	a.mu.Unlock()
	a.handleValues([]*cofferv1.SecretValue{{Secret: "s", Version: 1, Value: buf}, {Secret: "e", Version: 1}})
	a.mu.Lock()
	files, err := a.filesLocked(d)
	if err != nil || string(files[0].Value) != "value" || len(files[1].Value) != 0 {
		t.Fatalf("files %v, %v", files, err)
	}
	if n := a.statsLocked().Values; n != 2 {
		t.Fatalf("%d values held, want 2", n)
	}

	// The last reference goes within the grace period: kept, until the
	// collection after it.
	a.unrefLocked(d)
	if n := a.statsLocked().Values; n != 2 {
		t.Fatalf("%d values held within the grace period, want 2", n)
	}
	a.gcLocked()
	if n := a.statsLocked().Values; n != 2 {
		t.Fatalf("%d values held after a collection within the grace period, want 2", n)
	}
	a.cfg.ValueGrace = time.Nanosecond
	time.Sleep(time.Millisecond)
	a.refLocked(d) // referenced: the collection keeps it
	a.gcLocked()
	if n := a.statsLocked().Values; n != 2 {
		t.Fatalf("%d values held while referenced, want 2", n)
	}
	a.unrefLocked(d) // the last reference, after the grace period
	if n := a.statsLocked().Values; n != 0 || len(a.values) != 0 {
		t.Fatalf("%d values (%d entries) held after the last reference went, want none", n, len(a.values))
	}
	for i, b := range buf {
		if b != 0 {
			t.Fatalf("byte %d of the dropped value not zeroed: %q", i, buf)
		}
	}
	// A reference to a value never received leaves nothing behind.
	a.refLocked(desired(verKey{"never", 1}))
	a.unrefLocked(desired(verKey{"never", 1}))
	if len(a.values) != 0 {
		t.Fatalf("entries left: %v", a.values)
	}
}
