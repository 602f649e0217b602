package etcd

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"coffer/internal/etcdtest"
	"coffer/internal/store"
)

// watchLog collects what a Watch reports.
type watchLog struct {
	mu     sync.Mutex
	resets int
	seen   []string // "put k=v" or "del k"
}

func (w *watchLog) fn(cs []store.Change, reset bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if reset {
		w.resets++
	}
	for _, c := range cs {
		if c.Deleted {
			w.seen = append(w.seen, "del "+c.Key)
		} else {
			w.seen = append(w.seen, fmt.Sprintf("put %s=%s", c.Key, c.Value))
		}
	}
}

func (w *watchLog) wait(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		w.mu.Lock()
		got := fmt.Sprint(w.seen)
		w.mu.Unlock()
		if got == fmt.Sprint(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("watch saw %s, want %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Watch reports every change under its prefix, from any writer, in commit
// order, with the caller's keys; it starts with a reset, and it goes on
// after the cluster was down without reporting a reset or losing a change.
func TestWatch(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	other := open(t, c, nil) // another server
	ctx, cancel := context.WithCancel(context.Background())
	var w watchLog
	done := make(chan error, 1)
	go func() { done <- b.Watch(ctx, "w/", w.fn) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		w.mu.Lock()
		r := w.resets
		w.mu.Unlock()
		if r == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no reset at start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	put := func(s *Backend, k, v string) {
		t.Helper()
		if err := s.Update(context.Background(), func(tx store.Tx) error { return tx.Put(k, []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	put(other, "w/a", "1")
	put(b, "x/ignored", "1")
	put(other, "w/a", "2")
	if err := other.Update(context.Background(), func(tx store.Tx) error { return tx.Delete("w/a") }); err != nil {
		t.Fatal(err)
	}
	w.wait(t, "put w/a=1", "put w/a=2", "del w/a")

	m := c.Members[0]
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if err := m.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(); err != nil {
		t.Fatal(err)
	}
	put(other, "w/b", "3")
	w.wait(t, "put w/a=1", "put w/a=2", "del w/a", "put w/b=3")
	w.mu.Lock()
	resets := w.resets
	w.mu.Unlock()
	if resets != 1 {
		t.Fatalf("%d resets, want 1 (nothing was compacted)", resets)
	}
	cancel()
	if err := <-done; err != context.Canceled {
		t.Fatalf("Watch returned %v", err)
	}
}

// A receiver slower than the writers is given what came in meanwhile at
// once, in commit order, instead of one commit per call: it catches up
// rather than falling further behind.
func TestWatchGivesABacklogAtOnce(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var w watchLog
	started := make(chan struct{})
	release := make(chan struct{})
	var calls int
	var once sync.Once
	done := make(chan error, 1)
	go func() {
		done <- b.Watch(ctx, "w/", func(cs []store.Change, reset bool) {
			if reset {
				close(started)
				return
			}
			once.Do(func() { <-release }) // the first change's receiver is slow
			w.mu.Lock()
			calls++
			w.mu.Unlock()
			w.fn(cs, false)
		})
	}()
	<-started
	const n = 50
	var want []string
	for i := range n {
		k, v := fmt.Sprintf("w/k%02d", i), fmt.Sprint(i)
		if err := b.Update(context.Background(), func(tx store.Tx) error { return tx.Put(k, []byte(v)) }); err != nil {
			t.Fatal(err)
		}
		want = append(want, fmt.Sprintf("put %s=%s", k, v))
	}
	time.Sleep(200 * time.Millisecond) // the watch has the other 49 waiting
	close(release)
	w.wait(t, want...)
	w.mu.Lock()
	defer w.mu.Unlock()
	t.Logf("%d calls for %d commits", calls, n)
	if calls > 10 {
		t.Fatalf("%d calls for %d commits made while the receiver was busy: the backlog was not given at once", calls, n)
	}
}
