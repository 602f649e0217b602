package catalog

import (
	"context"
	"errors"
	"testing"
)

func TestLinkDynamic(t *testing.T) {
	c, _, ch := newCatalog(t)
	ctx := context.Background()
	dyn := Link{From: "vault-dynamic:database/creds/app", Upstream: "vault-dynamic", Item: "database/creds/app", Dynamic: true}

	// A static link first: relinking it dynamic destroys its value.
	static := Link{From: "vault:payments/db", Upstream: "vault", Item: "payments/db"}
	if _, err := c.LinkSecret(ctx, "payments/db", static, LinkedVersion{Upstream: "1", Value: []byte("v1")}, "t", false); err != nil {
		t.Fatal(err)
	}
	r, err := c.LinkDynamic(ctx, "payments/db", dyn, "t", false)
	if err != nil || !r.Changed || r.Was != Live || len(r.Versions) != 0 || !r.Link.Dynamic {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := c.Value(ctx, "payments/db", 1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the static value survived the relink: %v", err)
	}
	if last := (*ch)[len(*ch)-1]; last.Kind != SecretPut || last.Secret != "payments/db" {
		t.Fatalf("change %+v", last)
	}
	n := len(*ch)
	if r, err := c.LinkDynamic(ctx, "payments/db", dyn, "t", false); err != nil || r.Changed || len(*ch) != n {
		t.Fatalf("the same link again: %+v %v", r, err)
	}
	m, err := c.Show(ctx, "payments/db")
	if err != nil || m.Link == nil || !m.Link.Dynamic || m.Versions == nil {
		t.Fatalf("%+v %v", m, err)
	}
	// Writes of values are refused, as for every link.
	if _, err := c.Put(ctx, "payments/db", []byte("x"), "t"); !errors.Is(err, ErrConflict) {
		t.Fatalf("put on a dynamic link: %v", err)
	}
	// A stored secret is not turned into a link.
	if _, err := c.Put(ctx, "stored", []byte("x"), "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LinkDynamic(ctx, "stored", dyn, "t", false); !errors.Is(err, ErrConflict) {
		t.Fatalf("dynamic link over a stored secret: %v", err)
	}
	// Bad input changes nothing.
	if _, err := c.LinkDynamic(ctx, "new", Link{From: "x"}, "t", false); !errors.Is(err, ErrInvalid) {
		t.Fatalf("%v", err)
	}
	if _, err := c.Show(ctx, "new"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("%v", err)
	}
	// A dry run stores nothing.
	if r, err := c.LinkDynamic(ctx, "dry", dyn, "t", true); err != nil || !r.Changed {
		t.Fatalf("%+v %v", r, err)
	}
	if _, err := c.Show(ctx, "dry"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dry run stored: %v", err)
	}
	// Linked lists it; unlink removes it.
	ls, _ := c.Linked(ctx)
	if len(ls) != 1 || !ls[0].Link.Dynamic {
		t.Fatalf("%+v", ls)
	}
	if _, _, err := c.Unlink(ctx, "payments/db", false); err != nil {
		t.Fatal(err)
	}
	if last := (*ch)[len(*ch)-1]; last.Kind != SecretDeleted {
		t.Fatalf("change %+v", last)
	}
}
