package catalog

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"coffer/internal/policy"
	"coffer/internal/seal"
	"coffer/internal/store"
	"coffer/internal/store/bolt"
)

func newKey(t testing.TB, b byte) *seal.LocalKey {
	t.Helper()
	raw := make([]byte, 32)
	for i := range raw {
		raw[i] = b
	}
	k, err := seal.NewLocalKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newCatalog(t testing.TB) (*Catalog, store.Backend, *[]Change) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	var mu sync.Mutex
	changes := &[]Change{}
	c, err := Open(context.Background(), Config{Store: st, Key: newKey(t, 1), MaxVersions: 3, OnChange: func(ch Change) {
		mu.Lock()
		*changes = append(*changes, ch)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	return c, st, changes
}

func TestPutValueVersions(t *testing.T) {
	ctx := context.Background()
	c, _, changes := newCatalog(t)
	for i := 1; i <= 5; i++ {
		m, err := c.Put(ctx, "app/db", []byte(fmt.Sprint("value-", i)), "token:x")
		if err != nil || m.Current != uint64(i) {
			t.Fatalf("put %d: %v %v", i, m.Current, err)
		}
	}
	m, err := c.Show(ctx, "app/db")
	if err != nil || len(m.Versions) != 3 || m.Versions[0].Version != 5 || m.Versions[0].Author != "token:x" {
		t.Fatalf("show = %+v, %v", m, err)
	}
	v, err := c.Value(ctx, "app/db", 5)
	if err != nil || string(v) != "value-5" {
		t.Fatalf("value = %v", err)
	}
	v.Zero()
	if _, err := c.Value(ctx, "app/db", 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("trimmed version: %v", err)
	}
	if len(*changes) != 5 || (*changes)[4].Version != 5 {
		t.Fatalf("changes = %v", *changes)
	}
	// A secret named like a prefix of another keeps its own versions.
	if _, err := c.Put(ctx, "app", []byte("x"), "t"); err != nil {
		t.Fatal(err)
	}
	if err := c.Delete(ctx, "app"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Value(ctx, "app/db", 5); err != nil {
		t.Fatalf("deleting app removed app/db: %v", err)
	}
	if err := c.Delete(ctx, "app/db"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Show(ctx, "app/db"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after delete: %v", err)
	}
	// Created again, it continues its numbering: versions are never reused.
	if m, err := c.Put(ctx, "app/db", []byte("again"), "t"); err != nil || m.Current != 6 {
		t.Fatalf("recreated: version %d, %v", m.Current, err)
	}
}

func TestPutRejects(t *testing.T) {
	ctx := context.Background()
	c, _, _ := newCatalog(t)
	if _, err := c.Put(ctx, "a", nil, "t"); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty: %v", err)
	}
	if _, err := c.Put(ctx, "a", make([]byte, 1<<20+1), "t"); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("large: %v", err)
	}
	if _, err := c.Put(ctx, "../a", []byte("x"), "t"); err == nil {
		t.Fatal("bad name accepted")
	}
	if _, err := c.Generate(ctx, "a", 0, "", "t"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("length 0: %v", err)
	}
	m, err := c.Generate(ctx, "g", 64, "hex", "t")
	if err != nil {
		t.Fatal(err)
	}
	v, _ := c.Value(ctx, "g", m.Current)
	if len(v) != 64 {
		t.Fatalf("generated %d bytes", len(v))
	}
	for _, ch := range v {
		if !(ch >= '0' && ch <= '9' || ch >= 'a' && ch <= 'f') {
			t.Fatalf("generated a non-hex byte")
		}
	}
}

func TestWrongMasterKeyIsRefused(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, err := Open(ctx, Config{Store: st, Key: newKey(t, 1)}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctx, Config{Store: st, Key: newKey(t, 2)}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong key: %v", err)
	}
}

func TestBindingsPersist(t *testing.T) {
	ctx := context.Background()
	c, st, _ := newCatalog(t)
	if _, err := c.PutBinding(ctx, Binding{Binding: policy.Binding{Name: "b1", Secret: "app/db", Selector: "app=web"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutBinding(ctx, Binding{Binding: policy.Binding{Name: "b2", Secret: "app/db", Selector: ""}}); err == nil {
		t.Fatal("empty selector accepted")
	}
	c2, err := Open(ctx, Config{Store: st, Key: newKey(t, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if g := c2.Bindings().Match(policy.Target{Labels: map[string]string{"app": "web"}}); len(g) != 1 || g[0].File != "db" {
		t.Fatalf("grants after reload = %v", g)
	}
	if err := c2.DeleteBinding(ctx, "b1"); err != nil {
		t.Fatal(err)
	}
	if err := c2.DeleteBinding(ctx, "b1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if c2.Bindings().Len() != 0 {
		t.Fatal("binding still in the set")
	}
}

func BenchmarkPut(b *testing.B) {
	c, _, _ := newCatalog(b)
	ctx := context.Background()
	v := make([]byte, 64)
	b.ResetTimer()
	for i := range b.N {
		if _, err := c.Put(ctx, fmt.Sprintf("bench/s%d", i%1000), v, "bench"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkList10k(b *testing.B) {
	c, st, _ := newCatalog(b)
	ctx := context.Background()
	// Write 10,000 secrets in one transaction through the real Put path.
	for i := range 10000 {
		if _, err := c.Put(ctx, fmt.Sprintf("bench/s%05d", i), []byte("v"), "bench"); err != nil {
			b.Fatal(err)
		}
	}
	_ = st
	b.ResetTimer()
	for range b.N {
		ms, err := c.List(ctx, "")
		if err != nil || len(ms) != 10000 {
			b.Fatal(err, len(ms))
		}
	}
}
