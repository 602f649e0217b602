package keystore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"coffer/internal/keystore"
	"coffer/internal/keystore/keystoretest"
)

type event struct {
	item    string
	version string
	kind    error
}

func TestPoller(t *testing.T) {
	m := keystoretest.NewMemory("mem", 0)
	m.Set("a", []byte("1"))
	m.Set("b", []byte("1"))
	events := make(chan event, 100)
	var mu sync.Mutex
	items := []string{"a", "b"}
	p := &keystore.Poller{
		Keystore: m, Interval: 20 * time.Millisecond,
		Items: func() []string { mu.Lock(); defer mu.Unlock(); return append([]string(nil), items...) },
		OnChange: func(item string, st keystore.State) {
			events <- event{item, st.Version, keystore.Kind(st.Err)}
		},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	want := func(what string, wants ...event) {
		t.Helper()
		got := map[string]event{}
		deadline := time.After(10 * time.Second)
		for len(got) < len(wants) {
			select {
			case e := <-events:
				got[e.item] = e
			case <-deadline:
				t.Fatalf("%s: got %v, want %v", what, got, wants)
			}
		}
		for _, w := range wants {
			if got[w.item] != w {
				t.Fatalf("%s: got %v, want %v", what, got[w.item], w)
			}
		}
	}
	quiet := func(what string) {
		t.Helper()
		select {
		case e := <-events:
			t.Fatalf("%s: unexpected %v", what, e)
		case <-time.After(100 * time.Millisecond):
		}
	}
	want("first check", event{"a", "1", nil}, event{"b", "1", nil})
	quiet("no change")
	m.Set("a", []byte("2"))
	want("new version", event{"a", "2", nil})
	m.SetDown(true)
	want("outage", event{"a", "", keystore.ErrUnreachable}, event{"b", "", keystore.ErrUnreachable})
	quiet("still down")
	m.SetDown(false)
	want("back", event{"a", "2", nil}, event{"b", "1", nil})
	m.Delete("b")
	want("deleted", event{"b", "", keystore.ErrNotFound})
	mu.Lock()
	items = []string{"a"}
	mu.Unlock()
	quiet("b unlinked")
}

func TestPollerHints(t *testing.T) {
	m := keystoretest.NewMemory("mem", 0)
	m.Set("a", []byte("1"))
	events := make(chan string, 10)
	p := &keystore.Poller{
		Keystore: m, Interval: time.Hour, Items: func() []string { return []string{"a"} },
		OnChange: func(item string, st keystore.State) { events <- st.Version },
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	if v := <-events; v != "1" {
		t.Fatalf("first %q", v)
	}
	m.Set("a", []byte("2"))
	m.Hint("a", "unlinked")
	select {
	case v := <-events:
		if v != "2" {
			t.Fatalf("after a hint: %q", v)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a hint did not trigger a check (the interval is an hour)")
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run returned %v", err)
	}
}

func TestKind(t *testing.T) {
	if keystore.Kind(nil) != nil || keystore.Kind(errors.New("x")) != keystore.ErrUnreachable ||
		keystore.Kind(keystore.Errorf("u", "i", keystore.ErrDisabled, "off")) != keystore.ErrDisabled {
		t.Fatal("Kind")
	}
}
