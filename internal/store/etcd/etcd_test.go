package etcd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"coffer/internal/etcdtest"
	"coffer/internal/store"
	"coffer/internal/store/storetest"
)

// open opens a Backend on c (with the kit's client certificate when c
// serves TLS), closed at cleanup.
func open(t *testing.T, c *etcdtest.Cluster, mod func(*Config)) *Backend {
	t.Helper()
	cfg := Config{Endpoints: c.Endpoints()}
	if c.Client.Cert != "" {
		cfg.CertFile, cfg.KeyFile = c.Client.Cert, c.Client.Key
	}
	if mod != nil {
		mod(&cfg)
	}
	b, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	storetest.Run(t, open(t, c, nil))
}

func TestConformanceTLSClientCert(t *testing.T) {
	ca := etcdtest.NewCA(t, "coffer-test-ca")
	c := etcdtest.Start(t, etcdtest.Options{TLS: ca, ClientCertAuth: true})
	storetest.Run(t, open(t, c, func(cfg *Config) { cfg.CAFile = ca.CertFile }))
}

func TestConformanceCluster(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{Members: 3})
	storetest.Run(t, open(t, c, nil))
}

func put(t *testing.T, b *Backend, kv ...string) {
	t.Helper()
	err := b.Update(context.Background(), func(tx store.Tx) error {
		for i := 0; i < len(kv); i += 2 {
			if err := tx.Put(kv[i], []byte(kv[i+1])); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func list(t *testing.T, b *Backend, prefix string) string {
	t.Helper()
	var out []string
	err := b.View(context.Background(), func(tx store.Tx) error {
		return tx.List(prefix, func(k string, v []byte) error { out = append(out, k+"="+string(v)); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, " ")
}

func get(t *testing.T, b *Backend, key string) (string, error) {
	t.Helper()
	var v []byte
	err := b.View(context.Background(), func(tx store.Tx) error {
		var err error
		v, err = tx.Get(key)
		v = bytes.Clone(v)
		return err
	})
	return string(v), err
}

// Two installations on one etcd: "a" and "ab" (one a string prefix of the
// other) never see each other's keys.
func TestPrefixesIsolated(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	a := open(t, c, func(cfg *Config) { cfg.Prefix = "a" })
	ab := open(t, c, func(cfg *Config) { cfg.Prefix = "ab" })
	put(t, a, "k", "from-a", "b/x", "from-a")
	put(t, ab, "k", "from-ab", "x", "from-ab")
	if got := list(t, a, ""); got != "b/x=from-a k=from-a" {
		t.Fatalf("List in a = %q", got)
	}
	if got := list(t, ab, ""); got != "k=from-ab x=from-ab" {
		t.Fatalf("List in ab = %q", got)
	}
	if got := list(t, a, "b"); got != "b/x=from-a" {
		t.Fatalf("List b in a = %q", got)
	}
	if got := list(t, a, "\xff"); got != "" {
		t.Fatalf("List past every key of a = %q", got)
	}
	if v, err := get(t, ab, "k"); err != nil || v != "from-ab" {
		t.Fatalf("Get k in ab = %q, %v", v, err)
	}
	if _, err := get(t, a, "x"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Get x in a = %v, want ErrNotFound", err)
	}
	// Deleting in one leaves the other alone, and so does deleting
	// everything listed.
	err := a.Update(context.Background(), func(tx store.Tx) error {
		return tx.List("", func(k string, _ []byte) error { return tx.Delete(k) })
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := list(t, a, ""); got != "" {
		t.Fatalf("a after delete = %q", got)
	}
	if got := list(t, ab, ""); got != "k=from-ab x=from-ab" {
		t.Fatalf("ab after deleting a = %q", got)
	}
	// In etcd, every key of "a" is under "a/", none of "ab" is.
	for _, k := range strings.Fields(string(c.Etcdctl(t, "get", "--prefix", "a/", "--keys-only"))) {
		if !strings.HasPrefix(k, "a/") {
			t.Errorf("key %q under a/", k)
		}
	}
	if out := c.Etcdctl(t, "get", "--prefix", "ab/d/", "--keys-only"); !bytes.Contains(out, []byte("ab/d/x")) {
		t.Fatalf("ab's keys: %s", out)
	}
}

// Keys and values are bytes: NULs, invalid UTF-8 and empty values come
// back exactly.
func TestBinarySafe(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	kv := map[string][]byte{"sv/x\x0000000000000000000001": all, "e": {}, "\xff\xfe": []byte("\x00")}
	err := b.Update(context.Background(), func(tx store.Tx) error {
		for k, v := range kv {
			if err := tx.Put(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	err = b.View(context.Background(), func(tx store.Tx) error {
		for k, want := range kv {
			got, err := tx.Get(k)
			if err != nil || !bytes.Equal(got, want) || got == nil {
				return fmt.Errorf("Get %q = %q, %v", k, got, err)
			}
		}
		return tx.List("", func(k string, v []byte) error {
			n++
			if !bytes.Equal(v, kv[k]) {
				return fmt.Errorf("List %q = %q", k, v)
			}
			return nil
		})
	})
	if err != nil || n != len(kv) {
		t.Fatalf("%v (listed %d)", err, n)
	}
	err = b.Update(context.Background(), func(tx store.Tx) error { return tx.Put("", []byte("x")) })
	if err == nil {
		t.Fatal("Put of an empty key succeeded")
	}
}

// Inside an Update, reads see the transaction's own writes, and List merges
// them in key order.
func TestReadYourWrites(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	put(t, b, "p/1", "old", "p/3", "old", "p/5", "old")
	err := b.Update(context.Background(), func(tx store.Tx) error {
		tx.Put("p/1", []byte("new"))
		tx.Put("p/2", []byte("new"))
		tx.Delete("p/3")
		tx.Put("p/6", []byte("new"))
		tx.Put("q/1", []byte("new"))
		if v, err := tx.Get("p/1"); err != nil || string(v) != "new" {
			return fmt.Errorf("Get p/1 = %q, %v", v, err)
		}
		if _, err := tx.Get("p/3"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("Get deleted p/3 = %v", err)
		}
		var got []string
		err := tx.List("p/", func(k string, v []byte) error { got = append(got, k+"="+string(v)); return nil })
		if want := "p/1=new p/2=new p/5=old p/6=new"; strings.Join(got, " ") != want {
			return fmt.Errorf("List = %v, want %s", got, want)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := list(t, b, ""); got != "p/1=new p/2=new p/5=old p/6=new q/1=new" {
		t.Fatalf("after commit: %s", got)
	}
}

// List pages through more keys than one request returns.
func TestListPages(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	const n = 2*listPage + 7
	for i := 0; i < n; i += 100 {
		err := b.Update(context.Background(), func(tx store.Tx) error {
			for j := i; j < min(i+100, n); j++ {
				if err := tx.Put(fmt.Sprintf("k/%04d", j), []byte("v")); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var keys []string
	err := b.View(context.Background(), func(tx store.Tx) error {
		return tx.List("k/", func(k string, _ []byte) error { keys = append(keys, k); return nil })
	})
	if err != nil || len(keys) != n {
		t.Fatalf("listed %d keys, %v", len(keys), err)
	}
	for i, k := range keys {
		if k != fmt.Sprintf("k/%04d", i) {
			t.Fatalf("key %d = %s", i, k)
		}
	}
	// The same inside an Update, with a pending write in the middle.
	err = b.Update(context.Background(), func(tx store.Tx) error {
		tx.Put("k/0300x", []byte("new"))
		m := 0
		err := tx.List("k/", func(string, []byte) error { m++; return nil })
		if m != n+1 {
			return fmt.Errorf("listed %d", m)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// View sees one snapshot: writes made by others after its first read are
// invisible to its later reads.
func TestViewSnapshot(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	other := open(t, c, nil)
	put(t, b, "a", "1", "b", "1")
	err := b.View(context.Background(), func(tx store.Tx) error {
		if _, err := tx.Get("a"); err != nil {
			return err
		}
		put(t, other, "a", "2", "b", "2", "c", "2")
		v, err := tx.Get("b")
		if err != nil || string(v) != "1" {
			return fmt.Errorf("Get b = %q, %v; want the snapshot's 1", v, err)
		}
		if _, err := tx.Get("c"); !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("Get c = %v; want ErrNotFound at the snapshot", err)
		}
		var got []string
		err = tx.List("", func(k string, v []byte) error { got = append(got, k+"="+string(v)); return nil })
		if strings.Join(got, " ") != "a=1 b=1" {
			return fmt.Errorf("List = %v", got)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	err = b.View(context.Background(), func(tx store.Tx) error { return tx.Put("x", nil) })
	if !errors.Is(err, ErrReadOnly) {
		t.Fatalf("Put in View = %v", err)
	}
}

// Read-modify-write from many goroutines over two Backends (two servers)
// loses no increment.
func TestNoLostUpdates(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	bs := []*Backend{open(t, c, nil), open(t, c, nil)}
	const workers, each = 6, 15
	var wg sync.WaitGroup
	for i := range workers {
		b := bs[i%2]
		wg.Go(func() {
			for range each {
				err := b.Update(context.Background(), func(tx store.Tx) error {
					n := 0
					if v, err := tx.Get("counter"); err == nil {
						fmt.Sscan(string(v), &n)
					} else if !errors.Is(err, store.ErrNotFound) {
						return err
					}
					return tx.Put("counter", []byte(fmt.Sprint(n+1)))
				})
				if err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if v, err := get(t, bs[0], "counter"); err != nil || v != fmt.Sprint(workers*each) {
		t.Fatalf("counter = %s, %v; want %d", v, err, workers*each)
	}
}

// Write skew: each Update reads both flags and clears its own only if the
// other is still set. Snapshot isolation alone would let both clear; the
// read guards let at most one.
func TestNoWriteSkew(t *testing.T) {
	c := etcdtest.Start(t, etcdtest.Options{})
	b := open(t, c, nil)
	for round := range 10 {
		put(t, b, "x", "1", "y", "1")
		start := make(chan struct{})
		var wg sync.WaitGroup
		for _, mine := range []string{"x", "y"} {
			wg.Go(func() {
				<-start
				err := b.Update(context.Background(), func(tx store.Tx) error {
					x, err := tx.Get("x")
					if err != nil {
						return err
					}
					y, err := tx.Get("y")
					if err != nil {
						return err
					}
					if string(x) == "1" && string(y) == "1" {
						return tx.Put(mine, []byte("0"))
					}
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		close(start)
		wg.Wait()
		if got := list(t, b, ""); got == "x=0 y=0" {
			t.Fatalf("round %d: both flags cleared (write skew)", round)
		}
	}
}

// Phantoms: each Update lists "items/", adds or deletes one item and writes
// the count it computed, without reading "count" itself. Only the List
// guards keep the count true: the range guard against concurrent inserts,
// the delete clock against concurrent deletes.
func TestNoPhantoms(t *testing.T) {
	for _, insert := range []bool{true, false} {
		t.Run(map[bool]string{true: "Inserts", false: "Deletes"}[insert], func(t *testing.T) {
			c := etcdtest.Start(t, etcdtest.Options{})
			bs := []*Backend{open(t, c, nil), open(t, c, nil)}
			const workers, each = 8, 6
			for i := range workers * each {
				put(t, bs[0], fmt.Sprintf("items/seed%03d", i), "x")
			}
			put(t, bs[0], "count", fmt.Sprint(workers*each))
			start := make(chan struct{})
			var wg sync.WaitGroup
			for w := range workers {
				b := bs[w%2]
				wg.Go(func() {
					<-start
					for j := range each {
						err := b.Update(context.Background(), func(tx store.Tx) error {
							var items []string
							err := tx.List("items/", func(k string, _ []byte) error { items = append(items, k); return nil })
							if err != nil {
								return err
							}
							n := len(items)
							if insert {
								n++
								err = tx.Put(fmt.Sprintf("items/w%d-%d", w, j), []byte("x"))
							} else {
								n--
								// Deleters pick distinct items: item w*each+j of the seeds.
								err = tx.Delete(fmt.Sprintf("items/seed%03d", w*each+j))
							}
							if err != nil {
								return err
							}
							return tx.Put("count", []byte(fmt.Sprint(n)))
						})
						if err != nil {
							t.Error(err)
						}
					}
				})
			}
			close(start)
			wg.Wait()
			n := strings.Count(list(t, bs[0], "items/"), "=")
			if v, _ := get(t, bs[0], "count"); v != fmt.Sprint(n) {
				t.Fatalf("count = %s, but there are %d items", v, n)
			}
		})
	}
}
