package catalog

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/store"
	"coffer/internal/store/bolt"
)

// clock is a settable time source.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) Add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

// rig is a catalog over a real bbolt store, with a clock and the changes
// it notified.
type rig struct {
	*Catalog
	st    store.Backend
	clock *clock
	cfg   Config

	mu      sync.Mutex
	changes []Change
}

func newRig(t testing.TB) *rig {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	r := &rig{st: st, clock: &clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}}
	r.cfg = Config{Store: st, Key: newKey(t, 1), MaxVersions: 3, DeletedRetention: 24 * time.Hour, Now: r.clock.Now,
		OnChange: func(ch Change) { r.mu.Lock(); r.changes = append(r.changes, ch); r.mu.Unlock() }}
	r.reopen(t)
	return r
}

// reopen opens a new Catalog on the same store (as a restart would).
func (r *rig) reopen(t testing.TB) {
	t.Helper()
	c, err := Open(context.Background(), r.cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Catalog = c
}

// took returns the changes notified since the last call.
func (r *rig) took() []Change {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := r.changes
	r.changes = nil
	return out
}

// dump is every key and value in the store, for "nothing changed" checks.
func (r *rig) dump(t testing.TB) string {
	t.Helper()
	var b strings.Builder
	err := r.st.View(context.Background(), func(tx store.Tx) error {
		return tx.List("", func(k string, v []byte) error { fmt.Fprintf(&b, "%q=%q\n", k, v); return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// keys lists the store's keys with a prefix.
func (r *rig) keys(t testing.TB, prefix string) []string {
	t.Helper()
	var out []string
	r.st.View(context.Background(), func(tx store.Tx) error {
		return tx.List(prefix, func(k string, _ []byte) error { out = append(out, k); return nil })
	})
	return out
}

func (r *rig) put(t testing.TB, name, value string) SecretMeta {
	t.Helper()
	m, err := r.Put(context.Background(), name, []byte(value), "token:t")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (r *rig) value(t testing.TB, name string, v uint64) string {
	t.Helper()
	val, err := r.Value(context.Background(), name, v)
	if err != nil {
		t.Fatalf("value %s@%d: %v", name, v, err)
	}
	defer val.Zero()
	return string(val)
}

func TestSoftDeleteAndUndelete(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.put(t, "app/db", "one")
	r.put(t, "app/db", "two")
	r.put(t, "app/dbx", "other")
	r.took()

	if err := r.Delete(ctx, "app/db"); err != nil {
		t.Fatal(err)
	}
	if ch := r.took(); len(ch) != 1 || ch[0].Kind != SecretDeleted || ch[0].Secret != "app/db" {
		t.Fatalf("changes = %+v", ch)
	}
	_, err := r.Show(ctx, "app/db")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "deleted at 2026-01-02T03:04:05Z") || !strings.Contains(err.Error(), "until 2026-01-03T03:04:05Z") {
		t.Fatalf("show deleted: %v", err)
	}
	if _, err := r.Value(ctx, "app/db", 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a deleted secret's value is still delivered: %v", err)
	}
	if _, err := r.Current(ctx, "app/db"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("current of a deleted secret: %v", err)
	}
	if ls, _ := r.List(ctx, "app/"); len(ls) != 1 || ls[0].Name != "app/dbx" {
		t.Fatalf("list = %+v", ls)
	}
	del, err := r.ListDeleted(ctx, "")
	if err != nil || len(del) != 1 || del[0].Name != "app/db" || del[0].Current != 2 ||
		!del[0].Deleted.Equal(r.clock.Now()) || !del[0].PurgeAfter.Equal(r.clock.Now().Add(24*time.Hour)) {
		t.Fatalf("deleted = %+v, %v", del, err)
	}
	if err := r.Delete(ctx, "app/db"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "already deleted") {
		t.Fatalf("delete again: %v", err)
	}

	r.clock.Add(time.Hour)
	m, err := r.Undelete(ctx, "app/db", false)
	if err != nil || m.Current != 2 || len(m.Versions) != 2 || !m.Deleted.IsZero() {
		t.Fatalf("undelete = %+v, %v", m, err)
	}
	if ch := r.took(); len(ch) != 1 || ch[0].Kind != SecretPut || ch[0].Version != 2 {
		t.Fatalf("changes = %+v", ch)
	}
	if v := r.value(t, "app/db", 2); v != "two" {
		t.Fatal("restored the wrong value")
	}
	if v := r.value(t, "app/db", 1); v != "one" {
		t.Fatal("restored the wrong value")
	}
	if del, _ := r.ListDeleted(ctx, ""); len(del) != 0 {
		t.Fatalf("still listed as deleted: %+v", del)
	}

	// Bad input: nothing changes, a clear error.
	before := r.dump(t)
	for _, tt := range []struct {
		name string
		want error
		says string
	}{
		{"app/db", ErrConflict, "not deleted"},
		{"app/never", ErrNotFound, "never deleted, or purged"},
		{"Bad Name", nil, "invalid"},
	} {
		_, err := r.Undelete(ctx, tt.name, false)
		if err == nil || tt.want != nil && !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("undelete %q: %v", tt.name, err)
		}
	}
	if r.dump(t) != before || len(r.took()) != 0 {
		t.Fatal("a refused undelete changed the store")
	}
}

// A put to a deleted secret restores it, versions kept, numbering going on.
func TestPutRestoresADeletedSecret(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.put(t, "a", "one")
	r.put(t, "a", "two")
	if err := r.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	res, err := r.PutVersion(ctx, "a", []byte("three"), "token:t", false)
	if err != nil || !res.Restored || res.Current != 3 || len(res.Versions) != 3 {
		t.Fatalf("put = %+v, %v", res, err)
	}
	if r.value(t, "a", 1) != "one" || r.value(t, "a", 3) != "three" {
		t.Fatal("wrong values")
	}
	if del, _ := r.ListDeleted(ctx, ""); len(del) != 0 {
		t.Fatalf("still deleted: %+v", del)
	}
}

func TestPurge(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.put(t, "live", "x")
	r.put(t, "gone", "y")
	r.put(t, "gone", "y2")
	if err := r.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	r.took()

	if was, err := r.Purge(ctx, "live", false); err != nil || was != Live {
		t.Fatalf("purge live = %v, %v", was, err)
	}
	if ch := r.took(); len(ch) != 1 || ch[0].Kind != SecretDeleted || ch[0].Secret != "live" {
		t.Fatalf("changes = %+v", ch)
	}
	if was, err := r.Purge(ctx, "gone", false); err != nil || was != Deleted {
		t.Fatalf("purge deleted = %v, %v", was, err)
	}
	if ch := r.took(); len(ch) != 0 {
		t.Fatalf("purging a deleted secret notified %+v (it was not delivered anyway)", ch)
	}
	if ks := r.keys(t, "sv/"); len(ks) != 0 {
		t.Fatalf("sealed versions left after purge: %q", ks)
	}
	if ks := append(r.keys(t, "secret/"), r.keys(t, "deleted-secret/")...); len(ks) != 0 {
		t.Fatalf("metadata left after purge: %q", ks)
	}
	for _, name := range []string{"live", "gone"} {
		if _, err := r.Undelete(ctx, name, false); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "purged") {
			t.Errorf("undelete purged %s: %v", name, err)
		}
		if _, err := r.Purge(ctx, name, false); !errors.Is(err, ErrNotFound) {
			t.Errorf("purge twice %s: %v", name, err)
		}
	}
	// A (name, version) pair is never reused.
	if m := r.put(t, "gone", "z"); m.Current != 3 {
		t.Fatalf("recreated at version %d", m.Current)
	}
}

// Past its retention, a deleted secret is gone for every call, and purged
// by PurgeExpired and at Open.
func TestDeletedRetentionEnds(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.put(t, "a", "x")
	r.put(t, "b", "x")
	r.put(t, "c", "x")
	for _, n := range []string{"a", "b"} {
		if err := r.Delete(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	r.clock.Add(12 * time.Hour)
	if err := r.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	r.clock.Add(12 * time.Hour) // a and b: exactly at the end of their retention

	if del, _ := r.ListDeleted(ctx, ""); len(del) != 1 || del[0].Name != "c" {
		t.Fatalf("deleted = %+v", del)
	}
	if _, err := r.Undelete(ctx, "a", false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("undelete after retention: %v", err)
	}
	if n, err := r.PurgeExpired(ctx); err != nil || n != 2 {
		t.Fatalf("purge expired = %d, %v", n, err)
	}
	if ks := append(r.keys(t, "sv/a\x00"), r.keys(t, "sv/b\x00")...); len(ks) != 0 {
		t.Fatalf("versions survive their retention: %q", ks)
	}
	if ks := r.keys(t, "sv/c\x00"); len(ks) != 1 {
		t.Fatalf("c's versions were purged early: %q", ks)
	}
	// A restart purges what expired while the server was down.
	r.clock.Add(12 * time.Hour)
	r.reopen(t)
	if ks := r.keys(t, "sv/"); len(ks) != 0 {
		t.Fatalf("versions left after open: %q", ks)
	}
	if m := r.put(t, "c", "again"); m.Current != 2 {
		t.Fatalf("numbering restarted: %d", m.Current)
	}
}

// Every dry run checks what the real call checks and changes nothing.
func TestDryRunsChangeNothing(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	r.put(t, "live", "one")
	r.put(t, "live", "two")
	r.put(t, "del", "x")
	if err := r.Delete(ctx, "del"); err != nil {
		t.Fatal(err)
	}
	r.took()
	before := r.dump(t)

	if res, err := r.PutVersion(ctx, "live", []byte("three"), "t", true); err != nil || res.Current != 3 || res.Restored {
		t.Errorf("put dry run = %+v, %v", res, err)
	}
	if res, err := r.PutVersion(ctx, "del", []byte("y"), "t", true); err != nil || res.Current != 2 || !res.Restored {
		t.Errorf("put dry run of a deleted secret = %+v, %v", res, err)
	}
	if res, err := r.GenerateVersion(ctx, "new", 10, "hex", "t", true); err != nil || res.Current != 1 {
		t.Errorf("generate dry run = %+v, %v", res, err)
	}
	if _, err := r.GenerateVersion(ctx, "new", 10, "klingon", "t", true); !errors.Is(err, ErrInvalid) {
		t.Errorf("generate dry run, bad alphabet: %v", err)
	}
	if _, err := r.PutVersion(ctx, "live", make([]byte, 2<<20), "t", true); !errors.Is(err, ErrTooLarge) {
		t.Errorf("put dry run, too large: %v", err)
	}
	if m, err := r.SoftDelete(ctx, "live", true); err != nil || m.PurgeAfter.IsZero() {
		t.Errorf("delete dry run = %+v, %v", m, err)
	}
	if _, err := r.SoftDelete(ctx, "del", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("delete dry run of a deleted secret: %v", err)
	}
	if m, err := r.Undelete(ctx, "del", true); err != nil || m.Current != 1 {
		t.Errorf("undelete dry run = %+v, %v", m, err)
	}
	if was, err := r.Purge(ctx, "live", true); err != nil || was != Live {
		t.Errorf("purge dry run = %v, %v", was, err)
	}
	if res, err := r.Rollback(ctx, "live", 1, "t", true); err != nil || res.Current != 3 || res.From != 2 || res.To != 1 {
		t.Errorf("rollback dry run = %+v, %v", res, err)
	}
	if r.dump(t) != before {
		t.Fatal("a dry run changed the store")
	}
	if ch := r.took(); len(ch) != 0 {
		t.Fatalf("a dry run notified %+v", ch)
	}
	if r.value(t, "live", 2) != "two" {
		t.Fatal("current value changed")
	}
}

// The server's loop purges what expires while it runs.
func TestPurgeLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	r := newRig(t)
	r.put(t, "a", "x")
	if err := r.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.PurgeLoop(ctx, 5*time.Millisecond); close(done) }()
	time.Sleep(20 * time.Millisecond)
	if ks := r.keys(t, "sv/"); len(ks) != 1 {
		t.Fatalf("purged before the retention ended: %q", ks)
	}
	r.clock.Add(25 * time.Hour)
	deadline := time.Now().Add(5 * time.Second)
	for len(r.keys(t, "sv/")) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the loop never purged the expired secret")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
}
