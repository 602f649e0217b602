package linker

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/audit"
	"coffer/internal/catalog"
	"coffer/internal/keystore"
	"coffer/internal/keystore/keystoretest"
	"coffer/internal/seal"
	"coffer/internal/store/bolt"
)

type auditLog struct {
	mu     sync.Mutex
	events []audit.Event
}

func (a *auditLog) Append(_ context.Context, e audit.Event) (audit.Event, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
	return e, nil
}

func (a *auditLog) actions(action string) []audit.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []audit.Event
	for _, e := range a.events {
		if e.Action == action {
			out = append(out, e)
		}
	}
	return out
}

type fixture struct {
	cat   *catalog.Catalog
	mem   *keystoretest.Memory
	l     *Linker
	audit *auditLog
}

func start(t *testing.T) *fixture {
	t.Helper()
	st, err := bolt.Open(filepath.Join(t.TempDir(), "c.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := seal.NewLocalKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{mem: keystoretest.NewMemory("mem", 0), audit: &auditLog{}}
	f.cat, err = catalog.Open(context.Background(), catalog.Config{Store: st, Key: key,
		OnChange: func(ch catalog.Change) {
			if f.l != nil {
				f.l.Changed(ch)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	f.l = New(Config{Keystores: keystore.Set{"mem": f.mem}, Intervals: map[string]time.Duration{"mem": 10 * time.Millisecond},
		Catalog: f.cat, Audit: f.audit})
	return f
}

func (f *fixture) run(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- f.l.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

func (f *fixture) link(t *testing.T, name, from string) {
	t.Helper()
	lk, v, err := f.l.Resolve(context.Background(), from)
	if err != nil {
		t.Fatalf("resolve %s: %v", from, err)
	}
	defer v.Value.Zero()
	if _, err := f.cat.LinkSecret(context.Background(), name, lk, v, "token:ops", false); err != nil {
		t.Fatal(err)
	}
}

// eventually waits (bounded) for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (f *fixture) value(name string) string {
	v, err := f.cat.Current(context.Background(), name)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	val, err := f.cat.Value(context.Background(), name, v)
	if err != nil {
		return "<" + err.Error() + ">"
	}
	defer val.Zero()
	return string(val)
}

// One item, three secrets (two keys and the whole item): each upstream
// version is read once, and every secret gets it.
func TestFanInOneReadPerUpstreamVersion(t *testing.T) {
	f := start(t)
	f.mem.Set("payments/db", []byte(`{"user":"app","password":"pw1"}`))
	f.link(t, "payments/db-user", "mem:payments/db#user")
	f.link(t, "payments/db-password", "mem:payments/db#password")
	f.link(t, "payments/db-json", "mem:payments/db")
	f.run(t)
	readsBefore, _ := f.mem.Calls()

	f.mem.Set("payments/db", []byte(`{"user":"app","password":"pw2"}`))
	eventually(t, "the rotation", func() bool {
		return f.value("payments/db-password") == "pw2" && strings.Contains(f.value("payments/db-json"), "pw2") &&
			len(f.audit.actions("secret.sync")) == 3
	})
	// The user key did not change value, but it is a new upstream version
	// of the item: a new Coffer version with the same value.
	if got := f.value("payments/db-user"); got != "app" {
		t.Fatalf("user: %q", got)
	}
	time.Sleep(100 * time.Millisecond) // several more polls
	if reads, _ := f.mem.Calls(); reads-readsBefore != 1 {
		t.Fatalf("%d upstream reads for one new version of an item three secrets link to, want 1", reads-readsBefore)
	}
	if n := len(f.audit.actions("secret.sync")); n != 3 {
		t.Fatalf("%d secret.sync records, want 3", n)
	}
	for _, e := range f.audit.actions("secret.sync") {
		if e.Actor != "keystore:mem" || e.Details["upstream_version"] != "2" {
			t.Fatalf("sync record: %+v", e)
		}
	}
}

func TestUpstreamDeletionRevokesAndReturnRestores(t *testing.T) {
	f := start(t)
	f.mem.Set("app/key", []byte("k1"))
	f.link(t, "app/key", "mem:app/key")
	f.run(t)

	f.mem.Delete("app/key")
	eventually(t, "revocation", func() bool {
		_, err := f.cat.Current(context.Background(), "app/key")
		return errors.Is(err, catalog.ErrNotFound) && len(f.audit.actions("secret.revoke")) > 0
	})
	rev := f.audit.actions("secret.revoke")
	if len(rev) != 1 || rev[0].Actor != "keystore:mem" || !strings.Contains(rev[0].Details["reason"], "not found") || rev[0].Object != "secret:app/key" {
		t.Fatalf("revocation records: %+v", rev)
	}
	if s := f.l.LinkState(*mustShow(t, f.cat, "app/key").Link); s.State != "revoked" {
		t.Fatalf("link state: %+v", s)
	}
	f.mem.Set("app/key", []byte("k2"))
	eventually(t, "the item's return", func() bool { return f.value("app/key") == "k2" })

	// A key that disappears from a JSON item revokes only the secrets
	// that pick it.
	f.mem.Set("app/json", []byte(`{"a":"1","b":"2"}`))
	f.link(t, "app/a", "mem:app/json#a")
	f.link(t, "app/b", "mem:app/json#b")
	f.mem.Set("app/json", []byte(`{"a":"3"}`))
	eventually(t, "the rotation of a", func() bool { return f.value("app/a") == "3" })
	eventually(t, "the revocation of b", func() bool {
		_, err := f.cat.Current(context.Background(), "app/b")
		return errors.Is(err, catalog.ErrNotFound)
	})
	// Disabled and access lost count as gone too.
	f.mem.Disable("app/key", true)
	eventually(t, "revocation of a disabled item", func() bool {
		_, err := f.cat.Current(context.Background(), "app/key")
		return errors.Is(err, catalog.ErrNotFound)
	})
	for _, e := range f.audit.actions("secret.revoke") {
		for _, secret := range []string{"k1", "k2", `"2"`} {
			if strings.Contains(e.Details["reason"], secret) {
				t.Fatalf("a value in a revocation record: %+v", e)
			}
		}
	}
}

func TestUnreachableUpstreamKeepsValuesAndIsDegraded(t *testing.T) {
	f := start(t)
	f.mem.Set("app/key", []byte("k1"))
	f.link(t, "app/key", "mem:app/key")
	f.run(t)
	eventually(t, "a first check", func() bool { return !f.l.Status()[0].Checked.IsZero() })
	if d := f.l.Degraded(); len(d) != 0 {
		t.Fatalf("degraded while up: %v", d)
	}
	f.mem.SetDown(true)
	eventually(t, "degraded", func() bool { return len(f.l.Degraded()) == 1 })
	time.Sleep(50 * time.Millisecond)
	if got := f.value("app/key"); got != "k1" {
		t.Fatalf("an unreachable upstream changed the secret: %q", got)
	}
	if n := len(f.audit.actions("secret.revoke")); n != 0 {
		t.Fatalf("%d revocations for an outage", n)
	}
	if s := f.l.LinkState(*mustShow(t, f.cat, "app/key").Link); s.State != "degraded" || !strings.Contains(s.Error, "unreachable") {
		t.Fatalf("link state while down: %+v", s)
	}
	f.mem.SetDown(false)
	f.mem.Set("app/key", []byte("k2"))
	eventually(t, "recovery", func() bool { return len(f.l.Degraded()) == 0 && f.value("app/key") == "k2" })

	// Lost credentials are definite: the secret is revoked.
	f.mem.SetAccess(false)
	eventually(t, "revocation on lost access", func() bool {
		_, err := f.cat.Current(context.Background(), "app/key")
		return errors.Is(err, catalog.ErrNotFound)
	})
}

// A link removed or deleted is not polled any more; one restored is.
func TestLinkSetFollowsTheCatalog(t *testing.T) {
	f := start(t)
	f.mem.Set("a", []byte("1"))
	f.mem.Set("b", []byte("1"))
	f.link(t, "app/a", "mem:a")
	f.run(t)
	eventually(t, "a polled", func() bool { return len(f.l.itemsOf("mem")) == 1 })
	f.link(t, "app/b", "mem:b")
	eventually(t, "b polled", func() bool { return len(f.l.itemsOf("mem")) == 2 })
	if _, _, err := f.cat.Unlink(context.Background(), "app/a", false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.cat.SoftDelete(context.Background(), "app/b", false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "nothing polled", func() bool { return len(f.l.itemsOf("mem")) == 0 })
	if _, err := f.cat.Undelete(context.Background(), "app/b", false); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b polled again", func() bool { return len(f.l.itemsOf("mem")) == 1 })
	f.mem.Set("b", []byte("2"))
	eventually(t, "b rotated after undelete", func() bool { return f.value("app/b") == "2" })
}

func TestResolveErrors(t *testing.T) {
	f := start(t)
	f.mem.Set("app/json", []byte(`{"a":"secretvalue"}`))
	for from, want := range map[string]error{
		"nope:app/json":     keystore.ErrInvalidRef,
		"mem:app/missing":   keystore.ErrNotFound,
		"mem:app/json#b":    keystore.ErrNoKey,
		"mem:":              keystore.ErrInvalidRef,
		"no-colon":          keystore.ErrInvalidRef,
		"mem:app/json#":     keystore.ErrInvalidRef,
		"mem:app/json#a#b#": keystore.ErrInvalidRef,
	} {
		_, _, err := f.l.Resolve(context.Background(), from)
		if !errors.Is(err, want) {
			t.Errorf("%s: %v, want %v", from, err, want)
		}
		if err != nil && strings.Contains(err.Error(), "secretvalue") {
			t.Errorf("%s: the error quotes the value: %v", from, err)
		}
	}
	f.mem.SetDown(true)
	if _, _, err := f.l.Resolve(context.Background(), "mem:app/json#a"); !errors.Is(err, keystore.ErrUnreachable) || !strings.Contains(err.Error(), "mem") {
		t.Errorf("down: %v", err)
	}
}

func mustShow(t *testing.T, c *catalog.Catalog, name string) catalog.SecretMeta {
	t.Helper()
	m, err := c.Show(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
