package catalog

import (
	"context"
	"errors"
	"strings"
	"testing"
)

const dsnTemplate = `postgres://{{ secret "pay/user" }}:{{ secret "pay/password" | urlquery }}@db/app`

func TestTemplatedSecretFollowsItsInputs(t *testing.T) {
	ctx := context.Background()
	c, _, changes := newCatalog(t)
	c.Put(ctx, "pay/user", []byte("app"), "token:ops")
	c.Put(ctx, "pay/password", []byte("p@ss"), "token:ops")
	r, err := c.PutTemplate(ctx, "pay/dsn", dsnTemplate, "token:ops", nil, false)
	if err != nil || r.Current != 1 || len(r.Template.Inputs) != 2 || r.Versions[0].Inputs["pay/password"] != 1 {
		t.Fatalf("put template: %+v %v", r, err)
	}
	v, err := c.Value(ctx, "pay/dsn", 1)
	if err != nil || string(v) != "postgres://app:p%40ss@db/app" {
		t.Fatalf("render: %q %v", v, err)
	}
	n := len(*changes)
	// An input rotates: a new version of the template, rendered from it.
	c.Put(ctx, "pay/password", []byte("new"), "token:ops")
	if got := (*changes)[len(*changes)-1]; got.Secret != "pay/dsn" || got.Kind != SecretPut || got.Version != 2 || len(*changes) != n+2 {
		t.Fatalf("changes after an input rotated: %+v", (*changes)[n:])
	}
	if v, _ := c.Value(ctx, "pay/dsn", 2); string(v) != "postgres://app:new@db/app" {
		t.Fatalf("render 2: %q", v)
	}
	m, _ := c.Show(ctx, "pay/dsn")
	if m.Versions[0].Author != "template:pay/password" || m.Versions[0].Inputs["pay/password"] != 2 {
		t.Fatalf("version 2: %+v", m.Versions[0])
	}
	// The template's own writes are refused.
	if _, err := c.Put(ctx, "pay/dsn", []byte("x"), "token:ops"); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "templated") {
		t.Fatalf("put on a template: %v", err)
	}
	if _, err := c.Rollback(ctx, "pay/dsn", 1, "token:ops", false); !errors.Is(err, ErrConflict) {
		t.Fatalf("rollback of a template: %v", err)
	}
	// An input deleted: the template breaks (no container gets it), and
	// comes back with the input.
	c.SoftDelete(ctx, "pay/user", false)
	if _, err := c.Current(ctx, "pay/dsn"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("current with an input gone: %v", err)
	}
	if got := (*changes)[len(*changes)-1]; got.Secret != "pay/dsn" || got.Kind != SecretDeleted {
		t.Fatalf("change after an input was deleted: %+v", got)
	}
	c.Undelete(ctx, "pay/user", false)
	if cur, err := c.Current(ctx, "pay/dsn"); err != nil || cur != 3 {
		t.Fatalf("current after the input is back: %d %v", cur, err)
	}
	// A new template version.
	if r, err := c.PutTemplate(ctx, "pay/dsn", `user={{ secret "pay/user" }}`, "token:ops", nil, false); err != nil || r.Current != 4 {
		t.Fatalf("new template: %+v %v", r, err)
	}
	if v, _ := c.Value(ctx, "pay/dsn", 4); string(v) != "user=app" {
		t.Fatalf("render 4: %q", v)
	}
}

func TestPutTemplateRefusesAndChangesNothing(t *testing.T) {
	ctx := context.Background()
	c, _, changes := newCatalog(t)
	c.Put(ctx, "pay/user", []byte("app"), "token:ops")
	c.Put(ctx, "pay/bin", []byte{0xff, 0x00}, "token:ops")
	c.Put(ctx, "pay/stored", []byte("x"), "token:ops")
	c.PutTemplate(ctx, "pay/t1", `{{ secret "pay/user" }}`, "token:ops", nil, false)
	n := len(*changes)
	scope := func(in string) error {
		if !strings.HasPrefix(in, "pay/") {
			return errors.New("outside the token's scope")
		}
		return nil
	}
	for name, src := range map[string]string{
		"pay/a": `{{ secret "pay/missing" }}`,
		"pay/b": `{{ secret "pay/bin" }}`,
		"pay/c": `{{ secret "other/x" }}`,
		"pay/d": `{{ secret "pay/t1" }}`,
		"pay/e": `{{ range 10 }}{{ end }}`,
		"pay/f": `{{ secret "pay/f" }}`,
		"pay/g": `{{ secret "pay/user" | nope }}`,
	} {
		if _, err := c.PutTemplate(ctx, name, src, "token:ops", scope, false); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s %s: %v", name, src, err)
		}
	}
	if _, err := c.PutTemplate(ctx, "pay/stored", `{{ secret "pay/user" }}`, "token:ops", scope, false); !errors.Is(err, ErrConflict) {
		t.Errorf("over a stored secret: %v", err)
	}
	if r, err := c.PutTemplate(ctx, "pay/dry", `{{ secret "pay/bin" | base64 }}`, "token:ops", scope, true); err != nil || r.Current != 1 {
		t.Errorf("dry run of a good one: %+v %v", r, err)
	}
	if _, err := c.Show(ctx, "pay/dry"); !errors.Is(err, ErrNotFound) {
		t.Errorf("dry run stored: %v", err)
	}
	if len(*changes) != n {
		t.Errorf("refused templates changed something: %+v", (*changes)[n:])
	}
}
