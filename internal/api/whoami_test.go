package api_test

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"coffer/internal/audit"
	"coffer/internal/authn"
	"coffer/internal/authz"
)

// TestWhoamiNamesTheCallerNotTheToken: every role learns its own principal,
// role, scope, expiry and allowed actions; the token never appears; a bad
// token or a join token is 401; each call is audited.
func TestWhoamiNamesTheCallerNotTheToken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	plain, rec, err := e.tokens.Create(ctx, authn.CreateOptions{Role: authz.Operator, Scope: "payments/*", TTL: 30 * 24 * time.Hour, Description: "ci", CreatedBy: "token:x"})
	if err != nil {
		t.Fatal(err)
	}
	type wire struct {
		ID          string    `json:"id"`
		Role        string    `json:"role"`
		Scope       string    `json:"scope"`
		Description string    `json:"description"`
		CreatedBy   string    `json:"created_by"`
		Created     time.Time `json:"created"`
		Expires     time.Time `json:"expires"`
		Actions     []string  `json:"actions"`
	}
	var me wire
	if code := e.json(plain, "GET", "/v1/whoami", nil, &me); code != http.StatusOK {
		t.Fatalf("whoami = %d", code)
	}
	if me.ID != "token:"+rec.ID || me.Role != "operator" || me.Scope != "payments/" || me.Description != "ci" || me.CreatedBy != "token:x" ||
		!me.Expires.Equal(rec.Expires) || !me.Created.Equal(rec.Created) {
		t.Fatalf("whoami = %+v, record %+v", me, rec)
	}
	if want := []string{"secret.read", "secret.write", "binding.read", "binding.write", "agent.read"}; !slices.Equal(me.Actions, want) {
		t.Fatalf("operator actions = %v, want %v", me.Actions, want)
	}
	var admin wire
	e.json(e.admin, "GET", "/v1/whoami", nil, &admin)
	if admin.Role != "admin" || admin.Scope != "" || !admin.Expires.IsZero() || !slices.Contains(admin.Actions, "token.manage") {
		t.Fatalf("admin whoami = %+v", admin)
	}
	_, body := e.do(e.token(authz.Viewer, ""), "GET", "/v1/whoami", "")
	if strings.Contains(body, "expires") || !strings.Contains(body, `"viewer"`) {
		t.Fatalf("viewer whoami: %s", body)
	}

	join, _, err := e.tokens.Create(ctx, authn.CreateOptions{Role: authz.Agent})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{"", "coffer_0000000000000000_AAAA", join} {
		if code, _ := e.do(tok, "GET", "/v1/whoami", ""); code != http.StatusUnauthorized {
			t.Errorf("whoami with %.12q = %d, want 401", tok, code)
		}
	}
	for _, tok := range []string{plain, e.admin, join} {
		secretPart := strings.SplitN(tok, "_", 3)[2] // coffer_<hex id>_<secret>; the secret may hold "_" itself
		if strings.Contains(e.responses.String(), secretPart) {
			t.Fatal("a whoami answer contains a token")
		}
	}
	evs, err := e.audit.Query(ctx, audit.Filter{Action: "token.whoami"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 6 || evs[0].Actor != "token:"+rec.ID || evs[0].Object != "token:"+rec.ID || evs[0].Result != "ok" || evs[3].Result != "unauthenticated" {
		t.Fatalf("audit records: %+v", evs)
	}
}
