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

// An upstream that fails is polled less and less often (no retry storm),
// and a burst of hints costs one Check, not one per hint.
func TestPollerBacksOffAndCoalescesHints(t *testing.T) {
	m := keystoretest.NewMemory("mem", 0)
	m.Set("a", []byte("1"))
	m.SetDown(true)
	p := &keystore.Poller{
		Keystore: m, Interval: 5 * time.Millisecond, MaxBackoff: 160 * time.Millisecond, HintGap: 50 * time.Millisecond,
		Items:    func() []string { return []string{"a"} },
		OnChange: func(string, keystore.State) {},
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	time.Sleep(time.Second)
	_, down := m.Calls()
	// Without backoff: ~200 checks in a second. With it: 5, 10, 20, 40,
	// 80, 160, 160... ms (jittered over the upper half): at most ~15.
	if down > 20 {
		t.Errorf("%d checks in 1s against a failing upstream at a 5ms interval: no backoff", down)
	}
	cancel()
	<-done

	m.SetDown(false)
	p.Interval = time.Hour // only hints cause checks now
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	go func() { done <- p.Run(ctx) }()
	deadline := time.Now().Add(5 * time.Second)
	for _, checks := m.Calls(); checks == down; _, checks = m.Calls() { // the first check
		if time.Now().After(deadline) {
			t.Fatal("no first check")
		}
		time.Sleep(time.Millisecond)
	}
	_, before := m.Calls()
	for range 50 {
		m.Hint("a")
	}
	time.Sleep(300 * time.Millisecond)
	if _, after := m.Calls(); after-before < 1 || after-before > 2 {
		t.Errorf("50 hints within the gap caused %d checks, want 1 (or 2)", after-before)
	}
	cancel()
	<-done
}
