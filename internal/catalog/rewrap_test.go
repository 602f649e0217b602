package catalog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"coffer/internal/seal"
	"coffer/internal/store"
	"coffer/internal/store/bolt"
)

func rewrapKey(t *testing.T, b byte) *seal.LocalKey {
	t.Helper()
	k, err := seal.NewLocalKey(bytes.Repeat([]byte{b}, seal.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ring(t *testing.T, primary seal.KeyWrapper, previous ...seal.KeyWrapper) *seal.Ring {
	t.Helper()
	r, err := seal.NewRing(primary, previous...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// failingKey fails Wrap after n successful calls: a rewrap killed halfway.
type failingKey struct {
	seal.KeyWrapper
	left atomic.Int64
}

var errKilled = errors.New("killed")

func (f *failingKey) Wrap(ctx context.Context, dek []byte) ([]byte, error) {
	if f.left.Add(-1) < 0 {
		return nil, errKilled
	}
	return f.KeyWrapper.Wrap(ctx, dek)
}

// checkAll opens every kept version of every secret with kw alone.
func checkAll(t *testing.T, c *Catalog, kw seal.KeyWrapper, want map[string]string) {
	t.Helper()
	ctx := context.Background()
	only, err := Open(ctx, Config{Store: c.cfg.Store, Key: kw, MaxVersions: c.cfg.MaxVersions})
	if err != nil {
		t.Fatalf("catalog with the new key only: %v", err)
	}
	for k, v := range want {
		name, ver, _ := strings.Cut(k, "@")
		var n uint64
		fmt.Sscan(ver, &n)
		got, err := only.Value(ctx, name, n)
		if err != nil || string(got) != v {
			t.Errorf("%s version %d = %q, %v; want %q", name, n, got, err, v)
		}
	}
}

func TestRewrapLocalToLocal(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	oldKey, newKey := rewrapKey(t, 1), rewrapKey(t, 2)
	c, err := Open(ctx, Config{Store: st, Key: oldKey, MaxVersions: 4})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	put := func(c *Catalog, name string, i int) {
		v := fmt.Sprintf("value-%s-%d", name, i)
		m, err := c.Put(ctx, name, []byte(v), "t")
		if err != nil {
			t.Error(err)
			return
		}
		want[fmt.Sprintf("%s@%d", name, m.Current)] = v
	}
	for i := range 10 {
		for v := range 3 {
			put(c, fmt.Sprintf("app/s%d", i), v)
		}
	}
	// Rewrapping with nothing to move from is refused for the in-place kind.
	if _, err := Rewrap(ctx, RewrapConfig{Store: st, To: newKey, InPlace: true}); err == nil || !strings.Contains(err.Error(), "cannot rewrap in place") {
		t.Fatalf("in-place with a local key: %v", err)
	}

	// The server now seals with the new key and opens both.
	r := ring(t, newKey, oldKey)
	c2, err := Open(ctx, Config{Store: st, Key: r, MaxVersions: 4})
	if err != nil {
		t.Fatal(err)
	}
	// Killed halfway: some envelopes moved, the canary not.
	kill := &failingKey{KeyWrapper: newKey}
	kill.left.Store(7)
	if _, err := Rewrap(ctx, RewrapConfig{Store: st, To: kill, From: []seal.KeyWrapper{oldKey}, Batch: 3}); !errors.Is(err, errKilled) {
		t.Fatalf("killed rewrap: %v", err)
	}
	counts, canary, err := SealStatus(ctx, st)
	if err != nil || counts[newKey.KeyID()] != 6 || canary != oldKey.KeyID() {
		t.Fatalf("after a killed rewrap: %v canary %s, %v", counts, canary, err)
	}
	// Everything still opens with the ring, and a catalog on the old key
	// alone refuses nothing it cannot open at start (its canary is old).
	checkAll(t, c2, r, want)

	// Run again while writers put new versions (sealed under the new key)
	// and trim old ones.
	var wg sync.WaitGroup
	var mu sync.Mutex
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			mu.Lock()
			put(c2, fmt.Sprintf("app/s%d", i%10), 100+i)
			mu.Unlock()
		}
	}()
	stats, err := Rewrap(ctx, RewrapConfig{Store: st, To: newKey, From: []seal.KeyWrapper{oldKey}, Batch: 4})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if stats.Moved == 0 {
		t.Fatalf("stats = %+v", stats)
	}
	counts, canary, err = SealStatus(ctx, st)
	if err != nil || counts[oldKey.KeyID()] != 0 || canary != newKey.KeyID() {
		t.Fatalf("after rewrap: %v canary %s, %v", counts, canary, err)
	}
	// Trimmed versions are gone from want's point of view: keep what is kept.
	kept := map[string]string{}
	for k, v := range want {
		name, ver, _ := strings.Cut(k, "@")
		var n uint64
		fmt.Sscan(ver, &n)
		if err := st.View(ctx, func(tx store.Tx) error { _, err := tx.Get(versionKey(name, n)); return err }); err == nil {
			kept[k] = v
		}
	}
	if len(kept) < 30 {
		t.Fatalf("only %d versions kept", len(kept))
	}
	checkAll(t, c2, newKey, kept)
	// The old key no longer opens the store.
	if _, err := Open(ctx, Config{Store: st, Key: oldKey}); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old key after rewrap: %v", err)
	}
	// Idempotent: a second run has nothing to do.
	if stats, err := Rewrap(ctx, RewrapConfig{Store: st, To: newKey, From: []seal.KeyWrapper{oldKey}}); err != nil || stats.Moved != 0 {
		t.Fatalf("second run: %+v, %v", stats, err)
	}
}

func TestRewrapSkipsWhatIsNotAnEnvelope(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	oldKey, newKey := rewrapKey(t, 1), rewrapKey(t, 2)
	env, err := seal.Seal(ctx, oldKey, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	others := map[string]string{
		"a/json":     `{"kid":"` + oldKey.KeyID() + `","other":1}`,
		"a/partial":  `{"kid":"` + oldKey.KeyID() + `","wdek":"AA=="}`,
		"a/text":     "hello",
		"a/trailing": `{"kid":"` + oldKey.KeyID() + `","wdek":"AA==","nonce":"AA==","ct":"AA=="} {}`,
	}
	err = st.Update(ctx, func(tx store.Tx) error {
		if err := putJSON(tx, "a/env", env); err != nil {
			return err
		}
		for k, v := range others {
			if err := tx.Put(k, []byte(v)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if st, err := Rewrap(ctx, RewrapConfig{Store: st, To: newKey, From: []seal.KeyWrapper{oldKey}}); err != nil || st.Moved != 1 {
		t.Fatalf("Rewrap = %+v, %v", st, err)
	}
	err = st.View(ctx, func(tx store.Tx) error {
		for k, v := range others {
			got, _ := tx.Get(k)
			if string(got) != v {
				t.Errorf("%s changed to %q", k, got)
			}
		}
		var e seal.Envelope
		if err := getJSON(tx, "a/env", &e); err != nil {
			return err
		}
		pt, err := seal.Open(ctx, newKey, e, nil)
		if err != nil || string(pt) != "x" || !bytes.Equal(e.Ciphertext, env.Ciphertext) {
			t.Errorf("rewrapped envelope: %q, %v", pt, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestRewrapErrorsHoldNoKey(t *testing.T) {
	ctx := context.Background()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	oldKey, newKey, wrong := rewrapKey(t, 1), rewrapKey(t, 2), rewrapKey(t, 3)
	c, err := Open(ctx, Config{Store: st, Key: oldKey})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Put(ctx, "app/db", []byte("value-marker"), "t"); err != nil {
		t.Fatal(err)
	}
	// An envelope whose id names the old key but which does not unwrap.
	err = st.Update(ctx, func(tx store.Tx) error {
		env, err := seal.Seal(ctx, wrong, []byte("value-marker"), nil)
		if err != nil {
			return err
		}
		env.KeyID = oldKey.KeyID()
		return putJSON(tx, "x/bad", env)
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Rewrap(ctx, RewrapConfig{Store: st, To: newKey, From: []seal.KeyWrapper{oldKey}})
	if !errors.Is(err, ErrRewrap) || !errors.Is(err, seal.ErrDecrypt) || !strings.Contains(err.Error(), "x/bad") {
		t.Fatalf("Rewrap = %v", err)
	}
	if strings.Contains(err.Error(), "value-marker") {
		t.Fatal("value in error")
	}
	// The canary was not moved: the store still opens with the old key.
	if _, canary, _ := SealStatus(ctx, st); canary != oldKey.KeyID() {
		t.Fatalf("canary moved to %s", canary)
	}
	if _, err := Rewrap(ctx, RewrapConfig{Store: st, To: oldKey, From: []seal.KeyWrapper{oldKey}}); err == nil {
		t.Fatal("same key as old and new accepted")
	}
}
