package etcd

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"coffer/internal/etcdtest"
	"coffer/internal/store"
)

func TestContextCanceled(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	fn := func(store.Tx) error { called = true; return nil }
	if err := b.View(ctx, fn); !errors.Is(err, context.Canceled) {
		t.Fatalf("View = %v", err)
	}
	if err := b.Update(ctx, fn); !errors.Is(err, context.Canceled) {
		t.Fatalf("Update = %v", err)
	}
	if called {
		t.Fatal("fn ran under a canceled context")
	}
}

// A read that fails voids the transaction even when fn ignores the error:
// nothing is committed.
func TestFailedReadVoidsUpdate(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	put(t, b, "a", "1")
	ctx, cancel := context.WithCancel(context.Background())
	err := b.Update(ctx, func(tx store.Tx) error {
		if _, err := tx.Get("a"); err != nil {
			return err
		}
		cancel()
		tx.Get("b") // fails; fn carries on regardless
		return tx.Put("written", []byte("x"))
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Update = %v, want context.Canceled", err)
	}
	if _, err := get(t, b, "written"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the void update was committed: %v", err)
	}
}

// With the cluster gone, calls fail within the caller's deadline, or
// within RequestTimeout when the caller has none, and work again once it
// is back.
func TestClusterDown(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, func(cfg *Config) { cfg.RequestTimeout = 2 * time.Second })
	put(t, b, "a", "1")
	if err := c.Members[0].Kill(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	// The first call may meet the connection as it is reset; later ones
	// wait for a connection until their deadline.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := b.Update(ctx, func(tx store.Tx) error { return tx.Put("b", []byte("2")) }); err == nil {
		t.Fatal("Update with etcd down succeeded")
	}
	ctx, cancel = context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	err := b.Update(ctx, func(tx store.Tx) error { return tx.Put("b", []byte("2")) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Update with etcd down = %v, want DeadlineExceeded", err)
	}
	err = b.View(context.Background(), func(tx store.Tx) error { _, err := tx.Get("a"); return err })
	if err == nil || !strings.Contains(err.Error(), "etcd store") {
		t.Fatalf("View with etcd down = %v", err)
	}
	t.Logf("View with etcd down: %v", err)
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("the three calls took %s, want about 4s", took)
	}
	if err := c.Members[0].Restart(); err != nil {
		t.Fatal(err)
	}
	// The client reconnects with its own backoff, which on a loaded
	// machine can outlast one RequestTimeout: calls work again within a
	// few of them.
	back := time.Now().Add(15 * time.Second)
	for {
		err := b.Update(context.Background(), func(tx store.Tx) error { return tx.Put("b", []byte("2")) })
		if err == nil {
			break
		}
		if time.Now().After(back) {
			t.Fatalf("Update 15s after etcd was back: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v, err := get(t, b, "a"); err != nil || v != "1" {
		t.Fatalf("after restart: a = %q, %v", v, err)
	}
}

// A cluster that loses one member of three keeps serving through the same
// Backend; without a quorum, calls fail in bounded time.
func TestClusterMemberLoss(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Members: 3})
	b := open(t, c, func(cfg *Config) { cfg.RequestTimeout = 3 * time.Second })
	put(t, b, "a", "1")
	c.Members[0].Kill()
	if err := c.WaitHealthy(); err != nil {
		t.Fatal(err)
	}
	put(t, b, "b", "2")
	if got := list(t, b, ""); got != "a=1 b=2" {
		t.Fatalf("with one member down: %s", got)
	}
	c.Members[1].Kill()
	start := time.Now()
	err := b.Update(context.Background(), func(tx store.Tx) error { return tx.Put("c", []byte("3")) })
	if err == nil {
		t.Fatal("Update without a quorum succeeded")
	}
	t.Logf("Update without a quorum: %v", err)
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("Update without a quorum took %s", took)
	}
	if err := c.Members[1].Restart(); err != nil {
		t.Fatal(err)
	}
	if err := c.WaitHealthy(); err != nil {
		t.Fatal(err)
	}
	put(t, b, "c", "3")
}

// Compaction under a transaction's snapshot: Update runs fn again, View
// reports it.
func TestCompactedSnapshot(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	put(t, b, "a", "1", "b", "1")
	compact := func() {
		put(t, b, "a", "2")
		resp, err := b.Client().Get(context.Background(), "x")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Client().Compact(context.Background(), resp.Header.Revision); err != nil {
			t.Fatal(err)
		}
	}
	calls := 0
	err := b.Update(context.Background(), func(tx store.Tx) error {
		calls++
		if _, err := tx.Get("a"); err != nil {
			return err
		}
		if calls == 1 {
			compact()
		}
		v, err := tx.Get("b")
		if err != nil {
			return err
		}
		return tx.Put("c", v)
	})
	if err != nil || calls != 2 {
		t.Fatalf("Update = %v after %d calls, want success on the second", err, calls)
	}
	err = b.View(context.Background(), func(tx store.Tx) error {
		if _, err := tx.Get("a"); err != nil {
			return err
		}
		compact()
		_, err := tx.Get("b")
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "compacted") {
		t.Fatalf("View across a compaction = %v", err)
	}
}

// Conflicts are retried a bounded number of times, then reported.
func TestConflictRetriesBounded(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, func(cfg *Config) { cfg.MaxRetries = 5 })
	other := open(t, c, nil)
	put(t, b, "k", "0")
	calls := 0
	err := b.Update(context.Background(), func(tx store.Tx) error {
		calls++
		if _, err := tx.Get("k"); err != nil {
			return err
		}
		put(t, other, "k", "changed") // every attempt is overtaken
		return tx.Put("out", []byte("x"))
	})
	if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "5 attempts") {
		t.Fatalf("Update = %v, want ErrConflict after 5 attempts", err)
	}
	if calls != 5 {
		t.Fatalf("fn ran %d times, want 5", calls)
	}
	if _, err := get(t, b, "out"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a conflicted update was committed: %v", err)
	}
}
