package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"coffer/internal/policy"
)

func bnd(name, secret, selector string) Binding {
	return Binding{Binding: policy.Binding{Name: name, Secret: secret, Selector: selector}}
}

var web = policy.Target{Labels: map[string]string{"app": "web"}}

func TestPutBindingIf(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	res, err := r.PutBindingIf(ctx, bnd("b", "app/db", "app=web"), MustNotExist("b"), false)
	if err != nil || res.Before != nil || res.After.File != "db" || res.Set.Len() != 1 {
		t.Fatalf("create = %+v, %v", res, err)
	}
	r.took()
	before := r.dump(t)

	// Create-only over an existing name, replace-only of a missing name, a
	// check that refuses, a bad managed_by, a dry run: nothing changes.
	if _, err := r.PutBindingIf(ctx, bnd("b", "app/other", "app=x"), MustNotExist("b"), false); !errors.Is(err, ErrConflict) ||
		err.Error() != "binding b: conflict: it already exists" {
		t.Errorf("create over existing: %v", err)
	}
	if _, err := r.PutBindingIf(ctx, bnd("c", "app/db", "app=x"), MustExist("c"), false); !errors.Is(err, ErrNotFound) {
		t.Errorf("replace missing: %v", err)
	}
	refuse := errors.New("refused")
	if _, err := r.PutBindingIf(ctx, bnd("b", "app/db", "app=x"), All(MustExist("b"), func(*Binding) error { return refuse }), false); err != refuse {
		t.Errorf("check: %v", err)
	}
	bad := bnd("d", "app/db", "app=x")
	bad.ManagedBy = "no spaces allowed"
	if _, err := r.PutBindingIf(ctx, bad, nil, false); !errors.Is(err, policy.ErrInvalid) || !strings.Contains(err.Error(), `managed_by "no spaces allowed"`) {
		t.Errorf("bad managed_by: %v", err)
	}
	res, err = r.PutBindingIf(ctx, bnd("b", "app/db", "app=api"), MustExist("b"), true)
	if err != nil || res.Before.Selector != "app=web" || res.After.Selector != "app=api" || len(res.Set.Match(web)) != 0 {
		t.Errorf("dry run = %+v, %v", res, err)
	}
	if r.dump(t) != before || len(r.took()) != 0 || len(r.Bindings().Match(web)) != 1 {
		t.Fatal("a refused or dry-run write changed something")
	}

	// Replace, carrying managed_by, which survives a restart.
	up := bnd("b", "app/db", "app=api")
	up.ManagedBy = "coffer-apply"
	res, err = r.PutBindingIf(ctx, up, MustExist("b"), false)
	if err != nil || res.Before.Selector != "app=web" || res.After.ManagedBy != "coffer-apply" {
		t.Fatalf("replace = %+v, %v", res, err)
	}
	r.reopen(t)
	if got, err := r.GetBinding(ctx, "b"); err != nil || got.ManagedBy != "coffer-apply" || got.Selector != "app=api" {
		t.Fatalf("after restart: %+v, %v", got, err)
	}
	if ls, _ := r.ListBindings(ctx); len(ls) != 1 || ls[0].ManagedBy != "coffer-apply" {
		t.Fatalf("list = %+v", ls)
	}

	// Delete: a check, a dry run, then for real.
	r.took()
	if _, err := r.DeleteBindingIf(ctx, "b", func(*Binding) error { return refuse }, false); err != refuse {
		t.Errorf("delete check: %v", err)
	}
	if res, err := r.DeleteBindingIf(ctx, "b", nil, true); err != nil || res.Before.Name != "b" || res.Set.Len() != 0 || r.Bindings().Len() != 1 {
		t.Errorf("delete dry run = %+v, %v", res, err)
	}
	if len(r.took()) != 0 {
		t.Fatal("dry run notified")
	}
	if _, err := r.DeleteBindingIf(ctx, "b", nil, false); err != nil || r.Bindings().Len() != 0 {
		t.Fatalf("delete: %v", err)
	}
	if ch := r.took(); len(ch) != 1 || ch[0].Kind != BindingDeleted || ch[0].Secret != "app/db" {
		t.Fatalf("changes = %+v", ch)
	}
	if _, err := r.DeleteBindingIf(ctx, "b", nil, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("delete again: %v", err)
	}
}

func TestApplyBindings(t *testing.T) {
	ctx := context.Background()
	r := newRig(t)
	// By hand: one that apply will adopt untouched, one it will update,
	// one it never prunes; by another owner: one it never prunes either.
	for _, b := range []Binding{bnd("hand", "app/a", "app=a"), bnd("edit", "app/e", "app=e"), bnd("keep", "app/k", "app=k")} {
		if _, err := r.PutBinding(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	theirs := bnd("theirs", "app/t", "app=t")
	theirs.ManagedBy = "other-repo"
	if _, err := r.PutBinding(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	r.took()

	want := []Binding{bnd("new", "app/n", "app=web"), bnd("hand", "app/a", "app=a"), bnd("edit", "app/e", "app=e2")}
	res, err := r.ApplyBindings(ctx, ApplyRequest{Bindings: want, Owner: "coffer-apply", Prune: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Created) != 1 || res.Created[0].Name != "new" || res.Created[0].ManagedBy != "coffer-apply" {
		t.Errorf("created = %+v", res.Created)
	}
	if len(res.Updated) != 1 || res.Updated[0].Before.Selector != "app=e" || res.Updated[0].After.Selector != "app=e2" || res.Updated[0].After.ManagedBy != "" {
		t.Errorf("updated = %+v", res.Updated)
	}
	if fmt.Sprint(res.Unchanged) != "[hand]" || len(res.Deleted) != 0 {
		t.Errorf("unchanged = %v, deleted = %+v (nothing carries the marker yet)", res.Unchanged, res.Deleted)
	}
	if ch := r.took(); len(ch) != 2 {
		t.Errorf("changes = %+v", ch)
	}

	// The same files again: a no-op. Without "new": it is pruned, and only it.
	if res, err := r.ApplyBindings(ctx, ApplyRequest{Bindings: want, Owner: "coffer-apply", Prune: true}); err != nil ||
		len(res.Created)+len(res.Updated)+len(res.Deleted) != 0 || len(res.Unchanged) != 3 {
		t.Errorf("again = %+v, %v", res, err)
	}
	if ch := r.took(); len(ch) != 0 {
		t.Errorf("a no-op notified %+v", ch)
	}
	res, err = r.ApplyBindings(ctx, ApplyRequest{Bindings: want[1:], Owner: "coffer-apply", Prune: true, DryRun: true})
	if err != nil || len(res.Deleted) != 1 || res.Deleted[0].Name != "new" || res.Set.Len() != 4 {
		t.Errorf("prune dry run = %+v, %v", res, err)
	}
	if r.Bindings().Len() != 5 || len(r.took()) != 0 {
		t.Fatal("the dry run changed the bindings")
	}
	// Prune sees only what Visible allows.
	res, err = r.ApplyBindings(ctx, ApplyRequest{Bindings: want[1:], Owner: "coffer-apply", Prune: true,
		Visible: func(b Binding) bool { return b.Name != "new" }})
	if err != nil || len(res.Deleted) != 0 {
		t.Errorf("prune of an invisible binding = %+v, %v", res, err)
	}
	res, err = r.ApplyBindings(ctx, ApplyRequest{Bindings: want[1:], Owner: "coffer-apply", Prune: true})
	if err != nil || len(res.Deleted) != 1 || res.Deleted[0].Name != "new" {
		t.Fatalf("prune = %+v, %v", res, err)
	}
	if _, err := r.GetBinding(ctx, "theirs"); err != nil {
		t.Fatalf("another owner's binding was pruned: %v", err)
	}
	if _, err := r.GetBinding(ctx, "keep"); err != nil {
		t.Fatalf("a binding made by hand was pruned: %v", err)
	}

	// All or nothing: one refused change, a bad binding, a duplicate or a
	// bad owner leaves everything as it was.
	r.took()
	before := r.dump(t)
	refuse := errors.New("refused")
	for _, tt := range []struct {
		desc string
		req  ApplyRequest
		says string
	}{
		{"check refuses the last", ApplyRequest{Bindings: []Binding{bnd("x1", "app/x", "app=x"), bnd("x2", "app/x", "app=y")}, Owner: "o",
			Check: func(_, next *Binding) error {
				if next != nil && next.Name == "x2" {
					return refuse
				}
				return nil
			}}, "refused"},
		{"invalid selector", ApplyRequest{Bindings: []Binding{bnd("x1", "app/x", "app=x"), bnd("x2", "app/x", "app in (")}, Owner: "o"}, `invalid binding "x2": selector`},
		{"duplicate", ApplyRequest{Bindings: []Binding{bnd("x1", "app/x", "app=x"), bnd("x1", "app/y", "app=y")}, Owner: "o"}, `"x1": given twice`},
		{"bad owner", ApplyRequest{Bindings: []Binding{bnd("x1", "app/x", "app=x")}, Owner: "a b"}, `owner "a b"`},
		{"no owner", ApplyRequest{Bindings: []Binding{bnd("x1", "app/x", "app=x")}}, "owner: empty"},
	} {
		_, err := r.ApplyBindings(ctx, tt.req)
		if err == nil || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("%s: %v, want %q", tt.desc, err, tt.says)
		}
	}
	if r.dump(t) != before || len(r.took()) != 0 || r.Bindings().Len() != 4 {
		t.Fatal("a refused apply changed something")
	}
}

// BindingChange applies a watched change of a binding key to the compiled
// bindings: a put, a replacement, a deletion; a key that is no binding is
// ignored, and a value that is no binding (or compiles to none) is an
// error that changes nothing.
func TestBindingChange(t *testing.T) {
	c, _, _ := newCatalog(t)
	put := func(b Binding) []byte {
		t.Helper()
		v, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	matches := func() []string {
		var out []string
		for _, g := range c.Bindings().Match(web) {
			out = append(out, g.Binding)
		}
		return out
	}
	ch, ok, err := c.BindingChange(bindingKey("db"), put(bnd("db", "app/db", "app=web")), false)
	if err != nil || !ok || ch.Kind != BindingPut || ch.Secret != "app/db" || !slices.Equal(matches(), []string{"db"}) {
		t.Fatalf("put: %+v %v %v, matches %v", ch, ok, err, matches())
	}
	if _, _, err := c.BindingChange(bindingKey("db"), put(bnd("db", "app/db", "app=other")), false); err != nil || len(matches()) != 0 {
		t.Fatalf("replaced: %v, matches %v", err, matches())
	}
	c.BindingChange(bindingKey("db"), put(bnd("db", "app/db", "app=web")), false)
	for _, bad := range [][]byte{[]byte("{not json"), put(bnd("db", "app/db", "app in (")), nil} {
		if _, _, err := c.BindingChange(bindingKey("db"), bad, false); err == nil {
			t.Errorf("value %q: no error", bad)
		}
		if !slices.Equal(matches(), []string{"db"}) {
			t.Fatalf("value %q changed the bindings: matches %v", bad, matches())
		}
	}
	if _, ok, err := c.BindingChange("secret/app/db", []byte("{}"), false); ok || err != nil {
		t.Fatalf("a key that is no binding: %v %v", ok, err)
	}
	ch, ok, err = c.BindingChange(bindingKey("db"), nil, true)
	if err != nil || !ok || ch.Kind != BindingDeleted || ch.Secret != "app/db" || len(matches()) != 0 {
		t.Fatalf("delete: %+v %v %v, matches %v", ch, ok, err, matches())
	}
}
