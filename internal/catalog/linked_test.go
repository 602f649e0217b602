package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"

	"coffer/internal/secret"
	"coffer/internal/store"
)

var vaultLink = Link{From: "vault:payments/db#password", Upstream: "vault", Item: "payments/db", Key: "password"}

func linkedValue(up, val string) LinkedVersion {
	return LinkedVersion{Upstream: up, Value: secret.Value(val)}
}

func TestLinkSecretLifecycle(t *testing.T) {
	ctx := context.Background()
	c, st, changes := newCatalog(t)

	r, err := c.LinkSecret(ctx, "payments/db", vaultLink, linkedValue("1", "hunter2"), "token:ops", false)
	if err != nil || !r.Changed || r.Current != 1 || r.Was != Absent {
		t.Fatalf("link: %+v %v", r, err)
	}
	if v, err := c.Value(ctx, "payments/db", 1); err != nil || string(v) != "hunter2" {
		t.Fatalf("value: %q %v", v, err)
	}
	// Linking again to the same upstream version changes nothing.
	if r, err := c.LinkSecret(ctx, "payments/db", vaultLink, linkedValue("1", "hunter2"), "token:ops", false); err != nil || r.Changed {
		t.Fatalf("relink same: %+v %v", r, err)
	}
	// The upstream moves on: one new version, the old value destroyed.
	r, err = c.SyncLinked(ctx, "payments/db", vaultLink.From, linkedValue("2", "hunter3"), "keystore:vault")
	if err != nil || !r.Changed || r.Current != 2 || r.Versions[0].Upstream != "2" || r.Versions[0].Author != "keystore:vault" {
		t.Fatalf("sync: %+v %v", r, err)
	}
	if _, err := c.Value(ctx, "payments/db", 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old linked value still kept: %v", err)
	}
	if v, err := c.Value(ctx, "payments/db", 2); err != nil || string(v) != "hunter3" {
		t.Fatalf("value 2: %q %v", v, err)
	}
	// Stored-secret writes are refused with a message that says why.
	for name, err := range map[string]error{
		"put":      func() error { _, err := c.Put(ctx, "payments/db", []byte("x"), "token:ops"); return err }(),
		"generate": func() error { _, err := c.Generate(ctx, "payments/db", 10, "", "token:ops"); return err }(),
		"rollback": func() error { _, err := c.Rollback(ctx, "payments/db", 1, "token:ops", false); return err }(),
	} {
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "linked to vault:payments/db#password") {
			t.Errorf("%s on a linked secret: %v", name, err)
		}
	}
	// Revocation by the upstream: no deliverable version, value destroyed.
	if ok, err := c.RevokeLinked(ctx, "payments/db", vaultLink.From, "keystore vault: item \"payments/db\": not found"); err != nil || !ok {
		t.Fatalf("revoke: %v %v", ok, err)
	}
	if _, err := c.Current(ctx, "payments/db"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("current of a revoked link: %v", err)
	}
	if _, err := c.Value(ctx, "payments/db", 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoked value still kept: %v", err)
	}
	m, err := c.Show(ctx, "payments/db")
	if err != nil || m.Link == nil || m.Link.Revoked == "" || m.Link.RevokedAt.IsZero() {
		t.Fatalf("show revoked: %+v %v", m, err)
	}
	// The item is back upstream: a new version, delivered again.
	r, err = c.SyncLinked(ctx, "payments/db", vaultLink.From, linkedValue("4", "back"), "keystore:vault")
	if err != nil || !r.Changed || r.Current != 3 || r.Link.Revoked != "" {
		t.Fatalf("sync after revoke: %+v %v", r, err)
	}
	if v, _ := c.Current(ctx, "payments/db"); v != 3 {
		t.Fatalf("current after return: %d", v)
	}
	// Unlink: gone at once, numbering kept.
	if l, was, err := c.Unlink(ctx, "payments/db", false); err != nil || was != Live || l.From != vaultLink.From {
		t.Fatalf("unlink: %+v %v %v", l, was, err)
	}
	if _, err := c.Show(ctx, "payments/db"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("show after unlink: %v", err)
	}
	n := 0
	st.View(ctx, func(tx store.Tx) error {
		return tx.List(versionPrefix("payments/db"), func(string, []byte) error { n++; return nil })
	})
	if n != 0 {
		t.Fatalf("%d sealed versions left after unlink", n)
	}
	if m, err := c.Put(ctx, "payments/db", []byte("own"), "token:ops"); err != nil || m.Current != 4 {
		t.Fatalf("put after unlink: %+v %v", m, err)
	}
	var kinds []ChangeKind
	for _, ch := range *changes {
		kinds = append(kinds, ch.Kind)
	}
	want := []ChangeKind{SecretPut, SecretPut, SecretDeleted, SecretPut, SecretDeleted, SecretPut}
	if len(kinds) != len(want) {
		t.Fatalf("changes %v, want %v", kinds, want)
	}
}

func TestLinkRefusesAndChangesNothing(t *testing.T) {
	ctx := context.Background()
	c, _, changes := newCatalog(t)
	if _, err := c.Put(ctx, "app/stored", []byte("mine"), "token:ops"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LinkSecret(ctx, "app/stored", vaultLink, linkedValue("1", "x"), "token:ops", false); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "stored secret") {
		t.Fatalf("link over a stored secret: %v", err)
	}
	if _, _, err := c.Unlink(ctx, "app/stored", false); !errors.Is(err, ErrConflict) {
		t.Fatalf("unlink of a stored secret: %v", err)
	}
	if _, _, err := c.Unlink(ctx, "app/none", false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unlink of nothing: %v", err)
	}
	for name, v := range map[string]LinkedVersion{
		"empty":     linkedValue("1", ""),
		"toolarge":  {Upstream: "1", Value: make(secret.Value, 2<<20)},
		"noversion": linkedValue("", "x"),
	} {
		if _, err := c.LinkSecret(ctx, "app/"+name, vaultLink, v, "token:ops", false); err == nil {
			t.Errorf("%s: linked", name)
		}
	}
	if _, err := c.LinkSecret(ctx, "bad name", vaultLink, linkedValue("1", "x"), "token:ops", false); err == nil {
		t.Error("bad name linked")
	}
	// A dry run stores nothing.
	if r, err := c.LinkSecret(ctx, "app/dry", vaultLink, linkedValue("1", "x"), "token:ops", true); err != nil || !r.Changed {
		t.Fatalf("dry run: %+v %v", r, err)
	}
	if _, err := c.Show(ctx, "app/dry"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dry run stored: %v", err)
	}
	if len(*changes) != 1 {
		t.Fatalf("changes: %+v", *changes)
	}
	// Sync of a secret relinked or unlinked meanwhile does nothing.
	if _, err := c.LinkSecret(ctx, "app/l", vaultLink, linkedValue("1", "x"), "token:ops", false); err != nil {
		t.Fatal(err)
	}
	if r, err := c.SyncLinked(ctx, "app/l", "vault:other", linkedValue("9", "y"), "keystore:vault"); err != nil || r.Changed {
		t.Fatalf("sync of another link: %+v %v", r, err)
	}
	if ok, err := c.RevokeLinked(ctx, "app/l", "vault:other", "gone"); err != nil || ok {
		t.Fatalf("revoke of another link: %v %v", ok, err)
	}
	if r, err := c.SyncLinked(ctx, "app/stored", vaultLink.From, linkedValue("9", "y"), "keystore:vault"); err != nil || r.Changed {
		t.Fatalf("sync of a stored secret: %+v %v", r, err)
	}
	linked, err := c.Linked(ctx)
	if err != nil || len(linked) != 1 || linked[0].Name != "app/l" || linked[0].Versions[0].Upstream != "1" {
		t.Fatalf("linked: %+v %v", linked, err)
	}
}

func TestLinkedSecretSoftDeleteUndelete(t *testing.T) {
	ctx := context.Background()
	c, _, _ := newCatalog(t)
	if _, err := c.LinkSecret(ctx, "app/l", vaultLink, linkedValue("1", "x"), "token:ops", false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.SoftDelete(ctx, "app/l", false); err != nil {
		t.Fatal(err)
	}
	if linked, _ := c.Linked(ctx); len(linked) != 0 {
		t.Fatalf("a deleted link is still polled: %+v", linked)
	}
	if _, err := c.LinkSecret(ctx, "app/l", vaultLink, linkedValue("2", "y"), "token:ops", false); !errors.Is(err, ErrConflict) {
		t.Fatalf("link over a deleted secret: %v", err)
	}
	if _, err := c.Put(ctx, "app/l", []byte("x"), "token:ops"); !errors.Is(err, ErrConflict) {
		t.Fatalf("put over a deleted linked secret: %v", err)
	}
	m, err := c.Undelete(ctx, "app/l", false)
	if err != nil || m.Link == nil {
		t.Fatalf("undelete: %+v %v", m, err)
	}
	if v, err := c.Value(ctx, "app/l", 1); err != nil || string(v) != "x" {
		t.Fatalf("value after undelete: %q %v", v, err)
	}
	if _, _, err := c.Unlink(ctx, "app/l", false); err != nil {
		t.Fatal(err)
	}
}
