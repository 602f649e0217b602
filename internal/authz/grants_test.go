package authz

import "testing"

// A principal with several grants may do what one grant allows, within
// that grant's scope only: an operator grant on payments/ and a viewer
// grant on everything never make a writer of everything.
func TestGrantsUnion(t *testing.T) {
	p := Principal{ID: "ldap:alice", Grants: []Grant{
		{Role: Operator, Scope: "payments/"},
		{Role: Viewer},
		{Role: Auditor, Scope: "web/"},
	}}
	cases := []struct {
		a      Action
		object string
		ok     bool
	}{
		{SecretWrite, "payments/db", true},
		{SecretWrite, "web/db", false},
		{SecretWrite, "", true},
		{SecretRead, "web/db", true},
		{SecretRead, "other/x", true},
		{AuditRead, "web/x", true},
		{AuditRead, "payments/x", false},
		{TokenManage, "", false},
		{AgentManage, "", false},
	}
	for _, c := range cases {
		if err := Authorize(p, c.a, c.object); (err == nil) != c.ok {
			t.Errorf("Authorize(%s, %q) = %v, want ok=%v", c.a, c.object, err, c.ok)
		}
		// The projection for the action agrees with the full principal.
		if err := Authorize(p.For(c.a), c.a, c.object); (err == nil) != c.ok {
			t.Errorf("Authorize(For(%s), %q) = %v, want ok=%v", c.a, c.object, err, c.ok)
		}
	}
	// Scope checks after For count only the grants for the action.
	w := p.For(SecretWrite)
	if !InScope(w, "payments/db") || InScope(w, "web/db") {
		t.Errorf("For(SecretWrite): InScope payments=%v web=%v", InScope(w, "payments/db"), InScope(w, "web/db"))
	}
	if w.Role != Operator || w.Scope != "payments/" {
		t.Errorf("For(SecretWrite) summary = %s %q", w.Role, w.Scope)
	}
	r := p.For(SecretRead)
	if !InScope(r, "anything") || r.Scope != "" {
		t.Errorf("For(SecretRead): scope %q, InScope(anything)=%v", r.Scope, InScope(r, "anything"))
	}
	a := p.For(AuditRead)
	if a.Scope == "" || !InScope(a, "web/x") || InScope(a, "payments/x") {
		t.Errorf("For(AuditRead): scope %q", a.Scope)
	}
	// No grant for the action: nothing in scope, nothing allowed.
	n := p.For(TokenManage)
	if InScope(n, "payments/db") || ScopeWithin(n, "payments/") || Authorize(n, TokenManage, "") == nil {
		t.Errorf("For(TokenManage) allows something: %+v", n)
	}
	if !ScopeWithin(w, "payments/eu/") || ScopeWithin(w, "web/") || ScopeWithin(w, "") {
		t.Error("ScopeWithin over grants")
	}
	// An empty, non-nil grant list allows nothing.
	none := Principal{ID: "ldap:bob", Grants: []Grant{}}
	if Authorize(none, SecretRead, "") == nil || InScope(none, "x") {
		t.Error("no grants allowed something")
	}
	// Single-role principals are unchanged.
	tok := Principal{ID: "token:x", Role: Operator, Scope: "payments/"}
	if tok.For(SecretWrite).Scope != "payments/" || Authorize(tok, SecretWrite, "web/x") == nil {
		t.Error("token principal changed")
	}
}

func TestWidestRole(t *testing.T) {
	if r := WidestRole([]Grant{{Role: Viewer}, {Role: Auditor}, {Role: Operator}}); r != Operator {
		t.Errorf("got %s", r)
	}
	if r := WidestRole(nil); r != "" {
		t.Errorf("got %s", r)
	}
}
