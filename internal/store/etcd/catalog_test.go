package etcd

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"coffer/internal/catalog"
	"coffer/internal/etcdtest"
	"coffer/internal/seal"
)

// Two Coffer catalogs (two servers with the same master key) on one etcd,
// writing the same secret at once: every Put gets its own version number,
// none is lost, and every kept version opens to the value written as it.
func TestCatalogOnTwoServers(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	kw, err := seal.NewLocalKey(randBytes(t, seal.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var cats []*catalog.Catalog
	for range 2 {
		cat, err := catalog.Open(ctx, catalog.Config{Store: open(t, c, nil), Key: kw, MaxVersions: 50})
		if err != nil {
			t.Fatal(err)
		}
		cats = append(cats, cat)
	}
	const workers, each = 4, 8
	var mu sync.Mutex
	written := map[uint64]string{} // version -> value
	var wg sync.WaitGroup
	for w := range workers {
		cat := cats[w%2]
		wg.Go(func() {
			for j := range each {
				v := fmt.Sprintf("value-%d-%d", w, j)
				meta, err := cat.Put(ctx, "db/password", []byte(v), "test")
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if old, dup := written[meta.Current]; dup {
					t.Errorf("version %d given to %s and %s", meta.Current, old, v)
				}
				written[meta.Current] = v
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	meta, err := cats[1].Show(ctx, "db/password")
	if err != nil {
		t.Fatal(err)
	}
	if meta.Current != workers*each || len(meta.Versions) != workers*each || len(written) != workers*each {
		t.Fatalf("current %d, %d versions kept, %d written; want %d", meta.Current, len(meta.Versions), len(written), workers*each)
	}
	for version, want := range written {
		got, err := cats[0].Value(ctx, "db/password", version)
		if err != nil || string(got) != want {
			t.Fatalf("version %d = %q, %v; want %q", version, got, err, want)
		}
		got.Zero()
	}
	if err := cats[0].Delete(ctx, "db/password"); err != nil {
		t.Fatal(err)
	}
	if _, err := cats[1].Show(ctx, "db/password"); err == nil {
		t.Fatal("deleted secret still shown")
	}
}
