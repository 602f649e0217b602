package security_test

import (
	"net/http"
	"testing"
)

// A token scoped to payments/* (even with the admin role) used to list every
// token, revoke the unscoped admin token and remove any agent: scope meant
// nothing to tokens and agents. Now it sees and touches only what lies
// within its scope; everything else answers 404, as if it did not exist.
func TestScopedAdminCannotReachOutsideItsScope(t *testing.T) {
	srv, admin := start(t)
	// Another team's agent, enrolled by the unscoped admin.
	enroll(t, srv, admin, "shop-host")
	scoped := admin.As(admin.NewToken(t, map[string]any{"role": "admin", "scope": "payments/*"}))

	var toks []struct {
		ID    string `json:"id"`
		Scope string `json:"scope"`
	}
	scoped.Must(t, "GET", "/v1/tokens", nil, &toks)
	for _, tk := range toks {
		if tk.Scope == "" {
			t.Errorf("the scoped admin lists the unscoped token %s", tk.ID)
		}
	}
	// The bootstrap admin token's id, as the unscoped admin sees it.
	var all []struct {
		ID    string `json:"id"`
		Scope string `json:"scope"`
		Role  string `json:"role"`
	}
	admin.Must(t, "GET", "/v1/tokens", nil, &all)
	for _, tk := range all {
		if tk.Scope != "" {
			continue
		}
		if code, _ := scoped.Do("DELETE", "/v1/tokens/"+tk.ID, nil, nil); code != http.StatusNotFound {
			t.Errorf("revoking unscoped token %s (%s): HTTP %d, want 404", tk.ID, tk.Role, code)
		}
	}
	if code, _ := scoped.Do("DELETE", "/v1/agents/shop-host", nil, nil); code != http.StatusNotFound {
		t.Errorf("removing another team's agent: HTTP %d, want 404", code)
	}
	if _, ok := scoped.Agents(t)["shop-host"]; ok {
		t.Error("the scoped admin lists another team's agent")
	}
	// Its join tokens are confined to its scope: asking for an unscoped or
	// another team's one is refused.
	for _, scope := range []string{"", "shop/*"} {
		body := map[string]any{"role": "agent"}
		if scope != "" {
			body["scope"] = scope
		}
		var tok struct {
			Scope string `json:"scope"`
		}
		code, _ := scoped.Do("POST", "/v1/tokens", body, &tok)
		if code == http.StatusCreated && tok.Scope != "payments/" {
			t.Errorf("join token asked with scope %q got scope %q, want payments/", scope, tok.Scope)
		}
	}
	// The unscoped admin still works.
	if code, err := admin.Do("GET", "/v1/tokens", nil, nil); code != http.StatusOK {
		t.Fatalf("the unscoped admin token was hurt: HTTP %d %v", code, err)
	}
}
