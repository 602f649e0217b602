package catalog

import (
	"context"
	"errors"
	"testing"
)

func TestRevokeVersion(t *testing.T) {
	ctx := context.Background()
	c, _, changes := newCatalog(t)
	for _, v := range []string{"one", "two", "three"} {
		if _, err := c.Put(ctx, "app/db", []byte(v), "token:ops"); err != nil {
			t.Fatal(err)
		}
	}
	n := len(*changes)
	// An old version: destroyed, not delivered anyway, no change pushed.
	r, err := c.RevokeVersion(ctx, "app/db", 2, "leaked in a ticket")
	if err != nil || r.WasCurrent {
		t.Fatalf("revoke 2: %+v %v", r, err)
	}
	if _, err := c.Value(ctx, "app/db", 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoked value still there: %v", err)
	}
	if _, err := c.Rollback(ctx, "app/db", 2, "token:ops", false); !errors.Is(err, ErrGone) {
		t.Fatalf("rollback to a revoked version: %v", err)
	}
	if len(*changes) != n {
		t.Fatalf("revoking an old version pushed a change")
	}
	// The current one: nothing deliverable, containers lose it.
	r, err = c.RevokeVersion(ctx, "app/db", 3, "leaked in a log")
	if err != nil || !r.WasCurrent || r.Versions[0].Revoked != "leaked in a log" {
		t.Fatalf("revoke 3: %+v %v", r, err)
	}
	if _, err := c.Current(ctx, "app/db"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("current after revoking it: %v", err)
	}
	if last := (*changes)[len(*changes)-1]; last.Kind != SecretDeleted {
		t.Fatalf("change: %+v", last)
	}
	for v, want := range map[uint64]error{3: ErrGone, 9: ErrNotFound, 0: ErrNotFound} {
		if _, err := c.RevokeVersion(ctx, "app/db", v, "again"); !errors.Is(err, want) {
			t.Errorf("revoke %d: %v, want %v", v, err, want)
		}
	}
	if _, err := c.RevokeVersion(ctx, "app/db", 1, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("no reason: %v", err)
	}
	// A new version is delivered again.
	if m, err := c.Put(ctx, "app/db", []byte("four"), "token:ops"); err != nil || m.Current != 4 {
		t.Fatal(err)
	}
	if v, err := c.Current(ctx, "app/db"); err != nil || v != 4 {
		t.Fatalf("current: %d %v", v, err)
	}
	// A linked secret's revoked version is not synced back from the
	// upstream at the same upstream version; the next one is.
	if _, err := c.LinkSecret(ctx, "app/l", vaultLink, linkedValue("7", "x"), "token:ops", false); err != nil {
		t.Fatal(err)
	}
	if _, err := c.RevokeVersion(ctx, "app/l", 1, "leak"); err != nil {
		t.Fatal(err)
	}
	if r, err := c.SyncLinked(ctx, "app/l", vaultLink.From, linkedValue("7", "x"), "keystore:vault"); err != nil || r.Changed {
		t.Fatalf("the revoked upstream version came back: %+v %v", r, err)
	}
	if r, err := c.SyncLinked(ctx, "app/l", vaultLink.From, linkedValue("8", "y"), "keystore:vault"); err != nil || !r.Changed {
		t.Fatalf("the next upstream version: %+v %v", r, err)
	}
}
