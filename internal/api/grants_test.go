package api_test

import (
	"context"
	"net/http"
	"testing"

	"coffer/internal/authn"
	"coffer/internal/authz"
)

// A session in two groups, operator on payments/ and viewer on
// everything, reads everything but writes only payments/: its viewer
// grant's unscoped reach never counts for a write's scope checks (delete
// or overwrite of a binding whose secret is elsewhere, a write outside).
// Without authz.Principal.For in the API, InScope saw the viewer grant and
// let the session delete web's binding.
func TestSessionGrantsDoNotMix(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	tok, _, err := e.tokens.CreateSession(ctx, authn.SessionOptions{User: "ldap:mallory", TTL: 3600e9,
		Grants: []authz.Grant{{Role: authz.Operator, Scope: "payments/"}, {Role: authz.Viewer}}})
	if err != nil {
		t.Fatal(err)
	}
	put(e, e.admin, "web/db")
	put(e, e.admin, "payments/db")
	if c, body := e.do(e.admin, "PUT", "/v1/bindings/web-db", `{"secret":"web/db","selector":"app=web"}`); c != 200 {
		t.Fatalf("admin binding: %d %s", c, body)
	}
	cases := []struct {
		method, path, body string
		want               int
	}{
		{"GET", "/v1/secrets/web/db", "", http.StatusOK},           // viewer: reads everything
		{"GET", "/v1/bindings/web-db", "", http.StatusOK},          // viewer
		{"DELETE", "/v1/bindings/web-db", "", http.StatusNotFound}, // outside the write scope: as if absent
		{"PUT", "/v1/bindings/web-db", `{"secret":"payments/db","selector":"app=web"}`, http.StatusForbidden},
		{"PUT", "/v1/secrets/web/db", `{"value":"eA=="}`, http.StatusForbidden},
		{"DELETE", "/v1/secrets/web/db", "", http.StatusForbidden},
		{"PUT", "/v1/bindings/pay-db", `{"secret":"payments/db","selector":"app=pay"}`, http.StatusOK},
		{"PUT", "/v1/secrets/payments/db", `{"value":"eA=="}`, http.StatusOK}, // a second version
		{"GET", "/v1/audit", "", http.StatusForbidden},
		{"GET", "/v1/tokens", "", http.StatusForbidden},
	}
	for _, c := range cases {
		if code, body := e.do(tok, c.method, c.path, c.body); code != c.want {
			t.Errorf("%s %s: %d %s, want %d", c.method, c.path, code, body, c.want)
		}
	}
	if c, _ := e.do(e.admin, "GET", "/v1/bindings/web-db", ""); c != 200 {
		t.Errorf("web-db was changed or deleted: %d", c)
	}
}
