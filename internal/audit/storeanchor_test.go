package audit

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/internal/seal"
	"coffer/internal/store"
	"coffer/internal/store/bolt"
)

// realAnchor is a StoreAnchor on a bbolt file in dir with a new master key.
func realAnchor(t testing.TB, dir string) (StoreAnchor, func()) {
	t.Helper()
	st, err := bolt.Open(filepath.Join(dir, "coffer.db"))
	if err != nil {
		t.Fatal(err)
	}
	kp := filepath.Join(dir, "master.key")
	var k *seal.LocalKey
	if _, err := os.Stat(kp); err == nil {
		k, err = seal.LoadKeyFile(kp)
		if err != nil {
			t.Fatal(err)
		}
	} else if k, err = seal.CreateKeyFile(kp); err != nil {
		t.Fatal(err)
	}
	return StoreAnchor{Store: st, Master: k}, func() { st.Close(); k.Close() }
}

func TestStoreAnchor(t *testing.T) {
	dir := t.TempDir()
	a, closeStore := realAnchor(t, dir)
	defer closeStore()
	ctx := context.Background()
	if _, _, err := a.Load(ctx); !errors.Is(err, ErrNotAnchored) {
		t.Fatalf("Load of an empty store: %v", err)
	}
	key := bytes.Repeat([]byte{7}, KeySize)
	m := sealMark(key, Head{Seq: 3, Hash: strings.Repeat("a", 64)}, 1)
	if err := a.Save(ctx, key, m); err != nil {
		t.Fatal(err)
	}
	m2 := sealMark(key, Head{Seq: 4, Hash: strings.Repeat("b", 64)}, 1)
	if err := a.Save(ctx, nil, m2); err != nil {
		t.Fatal(err)
	}
	got, gm, err := a.Load(ctx)
	if err != nil || !bytes.Equal(got, key) || gm != m2 {
		t.Fatalf("Load = %x %+v %v", got, gm, err)
	}
	if err := a.Save(ctx, bytes.Repeat([]byte{8}, KeySize), m2); err == nil || !strings.Contains(err.Error(), "refusing to replace") {
		t.Fatalf("second key: %v", err)
	}
	// The key is sealed: its bytes are not in the store.
	var raw []byte
	a.Store.View(ctx, func(tx store.Tx) error { v, err := tx.Get(anchorKeyKey); raw = append(raw, v...); return err })
	if bytes.Contains(raw, key) || len(raw) == 0 {
		t.Fatalf("stored key %q", raw)
	}
	// Under another master key it does not open, and says so.
	other, _ := seal.NewLocalKey(bytes.Repeat([]byte{1}, seal.KeySize))
	if _, _, err := (StoreAnchor{Store: a.Store, Master: other}).Load(ctx); !errors.Is(err, seal.ErrDecrypt) || !strings.Contains(err.Error(), "master key") {
		t.Fatalf("Load under another master key: %v", err)
	}
	// One of the two keys alone.
	a.Store.Update(ctx, func(tx store.Tx) error { return tx.Delete(anchorHeadKey) })
	if _, _, err := a.Load(ctx); !errors.Is(err, store.ErrCorrupt) || !strings.Contains(err.Error(), "no audit head") {
		t.Fatalf("Load of a key without a head: %v", err)
	}
}

// TestStoreAnchorCrashBetweenWrites: the store lagging the file by the last
// commits, as a crash between a commit's fsync and its store write leaves
// it, is accepted and re-anchored; a file behind the store is refused, and
// neither file changes.
func TestStoreAnchorCrashBetweenWrites(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	db := filepath.Join(dir, "coffer.db")
	a, closeStore := realAnchor(t, dir)
	anchoredLog(t, path, a, 3)
	closeStore()
	lagging, _ := os.ReadFile(db) // the store as of seq 3

	a, closeStore = realAnchor(t, dir)
	head := anchoredLog(t, path, a, 2)
	closeStore()
	os.WriteFile(db, lagging, 0o600) // the last commits' head never reached the store

	a, closeStore = realAnchor(t, dir)
	l, err := Open(path, Options{Anchor: a})
	if err != nil {
		t.Fatalf("Open of a file ahead of the store: %v", err)
	}
	if _, m, _ := a.Load(context.Background()); m.Head != head || l.Head() != head {
		t.Fatalf("re-anchored at %+v, want %+v", m, head)
	}
	l.Close()
	closeStore()

	// The other way round: the file behind the store.
	lines := fileLines(t, path)
	os.WriteFile(path, []byte(strings.Join(lines[:4], "")), 0o600)
	beforeLog, _ := os.ReadFile(path)
	beforeDB, _ := os.ReadFile(db)
	a, closeStore = realAnchor(t, dir)
	_, err = Open(path, Options{Anchor: a})
	closeStore()
	if !errors.Is(err, ErrBehind) || !strings.Contains(err.Error(), "anchors seq 5 hash "+head.Hash) {
		t.Fatalf("Open of a file behind the store: %v", err)
	}
	afterLog, _ := os.ReadFile(path)
	afterDB, _ := os.ReadFile(db)
	if !bytes.Equal(beforeLog, afterLog) || !bytes.Equal(beforeDB, afterDB) {
		t.Fatal("a refused Open changed the file or the store")
	}
}
