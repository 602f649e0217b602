// Package storetest is the conformance suite every store.Backend runs.
package storetest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"coffer/internal/store"
)

// Run exercises b: get/put/delete, prefix listing, rollback, concurrency.
func Run(t *testing.T, b store.Backend) {
	ctx := context.Background()
	t.Run("GetMissing", func(t *testing.T) {
		err := b.View(ctx, func(tx store.Tx) error { _, err := tx.Get("nope"); return err })
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("Get missing = %v, want ErrNotFound", err)
		}
	})
	t.Run("PutGetListDelete", func(t *testing.T) {
		err := b.Update(ctx, func(tx store.Tx) error {
			for _, k := range []string{"a/2", "a/1", "b/1", "a/3"} {
				if err := tx.Put(k, []byte("v-"+k)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var keys []string
		err = b.View(ctx, func(tx store.Tx) error {
			v, err := tx.Get("a/2")
			if err != nil || string(v) != "v-a/2" {
				return fmt.Errorf("get a/2 = %q, %v", v, err)
			}
			return tx.List("a/", func(k string, _ []byte) error { keys = append(keys, k); return nil })
		})
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(keys) != "[a/1 a/2 a/3]" {
			t.Fatalf("List a/ = %v", keys)
		}
		if err := b.Update(ctx, func(tx store.Tx) error { return tx.Delete("a/2") }); err != nil {
			t.Fatal(err)
		}
		err = b.View(ctx, func(tx store.Tx) error { _, err := tx.Get("a/2"); return err })
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("after delete: %v", err)
		}
	})
	t.Run("Rollback", func(t *testing.T) {
		boom := errors.New("boom")
		err := b.Update(ctx, func(tx store.Tx) error {
			if err := tx.Put("rb", []byte("x")); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatalf("Update = %v", err)
		}
		err = b.View(ctx, func(tx store.Tx) error { _, err := tx.Get("rb"); return err })
		if !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("rolled back key present: %v", err)
		}
	})
	t.Run("Concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Go(func() {
				for j := range 20 {
					k := fmt.Sprintf("c/%d/%d", i, j)
					if err := b.Update(ctx, func(tx store.Tx) error { return tx.Put(k, []byte(k)) }); err != nil {
						t.Error(err)
					}
				}
			})
		}
		wg.Wait()
		n := 0
		_ = b.View(ctx, func(tx store.Tx) error {
			return tx.List("c/", func(string, []byte) error { n++; return nil })
		})
		if n != 160 {
			t.Fatalf("got %d keys, want 160", n)
		}
	})
}
