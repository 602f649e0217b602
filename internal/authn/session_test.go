package authn

import (
	"context"
	"errors"
	"testing"
	"time"

	"coffer/internal/authz"
)

func TestSessions(t *testing.T) {
	ctx := context.Background()
	tk, st := newTokens(t)
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tk.now = func() time.Time { return now }
	grants := []authz.Grant{{Role: authz.Operator, Scope: "payments/*"}, {Role: authz.Auditor}, {Role: authz.Operator, Scope: "payments/"}}
	plain, rec, err := tk.CreateSession(ctx, SessionOptions{User: "ldap:alice", Groups: []string{"cn=a"}, Grants: grants, TTL: 8 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	// Duplicates (after normalizing) are dropped; the summary is the
	// widest role and, as the scopes differ, no scope.
	if len(rec.Grants) != 2 || rec.Role != authz.Operator || rec.Scope != "" || !rec.Expires.Equal(now.Add(8*time.Hour)) || !rec.Session() {
		t.Fatalf("rec = %+v", rec)
	}
	got, err := tk.Authenticate(plain)
	if err != nil {
		t.Fatal(err)
	}
	p := got.Principal()
	if p.ID != "ldap:alice" || len(p.Grants) != 2 || authz.Authorize(p, authz.SecretWrite, "web/x") == nil || authz.Authorize(p, authz.AuditRead, "") != nil {
		t.Fatalf("principal %+v", p)
	}
	// Stored hashed, like every token: it survives a reload.
	tk2, err := NewTokens(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	tk2.now = tk.now
	if r2, err := tk2.Authenticate(plain); err != nil || r2.User != "ldap:alice" || len(r2.Grants) != 2 {
		t.Fatalf("after reload: %+v %v", r2, err)
	}
	// It expires, and the next login deletes it.
	now = now.Add(8 * time.Hour)
	if _, err := tk.Authenticate(plain); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("expired session: %v", err)
	}
	_, rec2, err := tk.CreateSession(ctx, SessionOptions{User: "ldap:bob", Grants: []authz.Grant{{Role: authz.Viewer, Scope: "web"}}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if rec2.Scope != "web/" || rec2.Role != authz.Viewer {
		t.Errorf("one-scope summary: %+v", rec2)
	}
	if _, ok := tk.Lookup(rec.ID); ok {
		t.Error("the expired session was not swept")
	}
	tk3, _ := NewTokens(ctx, st)
	if _, ok := tk3.Lookup(rec.ID); ok {
		t.Error("the expired session is still in the store")
	}
	for _, o := range []SessionOptions{
		{Grants: grants, TTL: time.Hour},
		{User: "ldap:x", Grants: grants},
		{User: "ldap:x", TTL: time.Hour},
		{User: "ldap:x", Grants: []authz.Grant{{Role: authz.Agent}}, TTL: time.Hour},
		{User: "ldap:x", Grants: []authz.Grant{{Role: "root"}}, TTL: time.Hour},
	} {
		if _, _, err := tk.CreateSession(ctx, o); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: %v", o, err)
		}
	}
}
