package api_test

import (
	"net/http"
	"strings"
	"testing"

	"coffer/internal/authz"
)

// TestScopedAuditorSeesOnlyItsScope pins what openapi.yaml says of
// GET /v1/audit: a scoped token's query returns only records about secrets
// within its scope.
func TestScopedAuditorSeesOnlyItsScope(t *testing.T) {
	e := newEnv(t)
	for _, n := range []string{"payments/db", "billing/db"} {
		if code := e.json(e.admin, "PUT", "/v1/secrets/"+n, map[string]any{"value": b64("v")}, nil); code != http.StatusCreated {
			t.Fatalf("put %s = %d", n, code)
		}
	}
	var all, scoped []struct {
		Object  string            `json:"object"`
		Details map[string]string `json:"details"`
	}
	e.json(e.admin, "GET", "/v1/audit", nil, &all)
	if code := e.json(e.token(authz.Auditor, "payments/*"), "GET", "/v1/audit", nil, &scoped); code != http.StatusOK {
		t.Fatalf("scoped query = %d", code)
	}
	if len(scoped) == 0 || len(scoped) >= len(all) {
		t.Fatalf("scoped auditor sees %d of %d records", len(scoped), len(all))
	}
	for _, ev := range scoped {
		if !strings.HasPrefix(ev.Object, "secret:payments/") && !strings.HasPrefix(ev.Details["secret"], "payments/") {
			t.Errorf("scoped auditor sees %+v", ev)
		}
	}
}
