package api_test

import (
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/internal/authz"
	"coffer/internal/identity"
)

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestSecretLifecycleIsWriteOnly(t *testing.T) {
	e := newEnv(t)
	const value = "s3cr3t-VALUE-never-shown-1"
	var meta map[string]any
	if code := e.json(e.admin, "PUT", "/v1/secrets/payments/db-password", map[string]any{"value": b64(value)}, &meta); code != http.StatusCreated {
		t.Fatalf("put = %d", code)
	}
	if meta["current_version"].(float64) != 1 {
		t.Fatalf("meta = %v", meta)
	}
	if code := e.json(e.admin, "PUT", "/v1/secrets/payments/db-password", map[string]any{"value": b64(value + "2")}, &meta); code != http.StatusOK || meta["current_version"].(float64) != 2 {
		t.Fatalf("second put = %d %v", code, meta)
	}
	if code := e.json(e.admin, "PUT", "/v1/secrets/payments/api-key", map[string]any{"generate": map[string]any{"length": 32, "alphabet": "hex"}}, nil); code != http.StatusCreated {
		t.Fatalf("generate = %d", code)
	}
	var list []map[string]any
	if code := e.json(e.admin, "GET", "/v1/secrets", nil, &list); code != 200 || len(list) != 2 {
		t.Fatalf("list = %d %v", code, list)
	}
	var show map[string]any
	if code := e.json(e.admin, "GET", "/v1/secrets/payments/db-password", nil, &show); code != 200 {
		t.Fatalf("show = %d", code)
	}
	if vs := show["versions"].([]any); len(vs) != 2 {
		t.Fatalf("versions = %v", vs)
	}
	for _, k := range []string{"value", "data", "plaintext"} {
		if _, ok := show[k]; ok {
			t.Fatalf("show has a %q field", k)
		}
	}
	if code, _ := e.do(e.admin, "DELETE", "/v1/secrets/payments/db-password", ""); code != http.StatusNoContent {
		t.Fatalf("delete = %d", code)
	}
	if code, _ := e.do(e.admin, "GET", "/v1/secrets/payments/db-password", ""); code != http.StatusNotFound {
		t.Fatalf("show deleted = %d", code)
	}
	if code, _ := e.do(e.admin, "DELETE", "/v1/secrets/payments/db-password", ""); code != http.StatusNotFound {
		t.Fatalf("delete again = %d", code)
	}
	// No route returns a value, whatever the role.
	if code, _ := e.do(e.admin, "GET", "/v1/secrets/payments/api-key/value", ""); code != http.StatusNotFound {
		t.Fatalf("value route = %d", code)
	}
	if strings.Contains(e.responses.String(), value) || strings.Contains(e.responses.String(), b64(value)) {
		t.Fatal("a response contains the value")
	}
}

func TestVersionsAreTrimmed(t *testing.T) {
	e := newEnv(t)
	for i := range 12 {
		e.json(e.admin, "PUT", "/v1/secrets/a", map[string]any{"value": b64(fmt.Sprint("v", i))}, nil)
	}
	var show map[string]any
	e.json(e.admin, "GET", "/v1/secrets/a", nil, &show)
	if n := len(show["versions"].([]any)); n != 10 || show["current_version"].(float64) != 12 {
		t.Fatalf("kept %d versions, current %v", n, show["current_version"])
	}
}

func TestBadInputChangesNothing(t *testing.T) {
	e := newEnv(t)
	big := strings.Repeat("A", 2<<20)
	tests := []struct {
		desc, method, path, body string
		want                     int
	}{
		{"malformed json", "PUT", "/v1/secrets/a", `{"value":`, 400},
		{"not json", "PUT", "/v1/secrets/a", `hello`, 400},
		{"empty body", "PUT", "/v1/secrets/a", ``, 400},
		{"unknown field", "PUT", "/v1/secrets/a", `{"value":"eA==","owner":"x"}`, 400},
		{"trailing data", "PUT", "/v1/secrets/a", `{"value":"eA=="} {}`, 400},
		{"both value and generate", "PUT", "/v1/secrets/a", `{"value":"eA==","generate":{"length":3}}`, 400},
		{"neither", "PUT", "/v1/secrets/a", `{}`, 400},
		{"bad base64", "PUT", "/v1/secrets/a", `{"value":"***"}`, 400},
		{"empty value", "PUT", "/v1/secrets/a", `{"value":""}`, 400},
		{"value over 1 MiB", "PUT", "/v1/secrets/a", `{"value":"` + base64.StdEncoding.EncodeToString(make([]byte, 1<<20+1)) + `"}`, 413},
		{"huge body", "PUT", "/v1/secrets/a", `{"value":"` + big + `"}`, 413},
		{"upper-case name", "PUT", "/v1/secrets/Payments", `{"value":"eA=="}`, 400},
		{"dot-dot name", "PUT", "/v1/secrets/a/../b", `{"value":"eA=="}`, 400},
		{"long name", "PUT", "/v1/secrets/" + strings.Repeat("a", 257), `{"value":"eA=="}`, 400},
		{"generate zero", "PUT", "/v1/secrets/a", `{"generate":{"length":0}}`, 400},
		{"generate huge", "PUT", "/v1/secrets/a", `{"generate":{"length":100000}}`, 400},
		{"unknown alphabet", "PUT", "/v1/secrets/a", `{"generate":{"length":8,"alphabet":"emoji"}}`, 400},
		{"wrong type", "PUT", "/v1/secrets/a", `{"value":42}`, 400},
		{"wrong type does not echo a number", "PUT", "/v1/secrets/a", `{"value":987654321}`, 400},
		{"bad selector", "PUT", "/v1/bindings/b", `{"secret":"a","selector":"app in (web"}`, 400},
		{"empty selector", "PUT", "/v1/bindings/b", `{"secret":"a","selector":""}`, 400},
		{"bad binding mode", "PUT", "/v1/bindings/b", `{"secret":"a","selector":"app=x","mode":4095}`, 400},
		{"bad binding file", "PUT", "/v1/bindings/b", `{"secret":"a","selector":"app=x","file":"../etc/passwd"}`, 400},
		{"binding unknown field", "PUT", "/v1/bindings/b", `{"secret":"a","selector":"app=x","x":1}`, 400},
		{"bad role", "POST", "/v1/tokens", `{"role":"root"}`, 400},
		{"bad ttl", "POST", "/v1/tokens", `{"role":"viewer","ttl":"forever"}`, 400},
		{"bad since", "GET", "/v1/audit?since=yesterday", ``, 400},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			code, body := e.do(e.admin, tt.method, tt.path, tt.body)
			if code != tt.want {
				t.Fatalf("status %d, want %d: %s", code, tt.want, body)
			}
			if !strings.Contains(body, `"error"`) {
				t.Fatalf("no error message: %s", body)
			}
			if strings.Contains(body, "987654321") {
				t.Fatalf("error echoes the input: %s", body)
			}
		})
	}
	var list []map[string]any
	e.json(e.admin, "GET", "/v1/secrets", nil, &list)
	var bl []map[string]any
	e.json(e.admin, "GET", "/v1/bindings", nil, &bl)
	if len(list) != 0 || len(bl) != 0 {
		t.Fatalf("bad input changed state: %v %v", list, bl)
	}
	if code, _ := e.do("", "GET", "/healthz", ""); code != 200 {
		t.Fatal("server stopped serving")
	}
}

func TestAuthentication(t *testing.T) {
	e := newEnv(t)
	viewer := e.token(authz.Viewer, "")
	for _, tok := range []string{"", "nonsense", "coffer_0000000000000000_" + strings.Repeat("A", 43), viewer + "x"} {
		if code, _ := e.do(tok, "GET", "/v1/secrets", ""); code != http.StatusUnauthorized {
			t.Fatalf("token %q: %d, want 401", tok, code)
		}
	}
	// Revoked token.
	var created map[string]any
	e.json(e.admin, "POST", "/v1/tokens", map[string]any{"role": "viewer"}, &created)
	tok := created["token"].(string)
	if code, _ := e.do(tok, "GET", "/v1/secrets", ""); code != 200 {
		t.Fatalf("new token: %d", code)
	}
	if code, _ := e.do(e.admin, "DELETE", "/v1/tokens/"+created["id"].(string), ""); code != 204 {
		t.Fatalf("revoke: %d", code)
	}
	if code, _ := e.do(tok, "GET", "/v1/secrets", ""); code != http.StatusUnauthorized {
		t.Fatalf("revoked token: %d", code)
	}
	// After repeated failures the source is slowed down, even with a good token.
	for range 3 {
		e.do("bad", "GET", "/v1/secrets", "")
	}
	if code, _ := e.do(e.admin, "GET", "/v1/secrets", ""); code != http.StatusTooManyRequests {
		t.Fatalf("after failures: %d, want 429", code)
	}
}

func TestRolesAndScopes(t *testing.T) {
	e := newEnv(t)
	viewer := e.token(authz.Viewer, "")
	operator := e.token(authz.Operator, "")
	auditor := e.token(authz.Auditor, "")
	scoped := e.token(authz.Operator, "payments/*")
	put := `{"value":"eA=="}`
	tests := []struct {
		desc, tok, method, path, body string
		want                          int
	}{
		{"viewer cannot put", viewer, "PUT", "/v1/secrets/a", put, 403},
		{"viewer lists", viewer, "GET", "/v1/secrets", "", 200},
		{"viewer no audit", viewer, "GET", "/v1/audit", "", 403},
		{"operator puts", operator, "PUT", "/v1/secrets/a", put, 201},
		{"operator binds", operator, "PUT", "/v1/bindings/b", `{"secret":"a","selector":"app=web"}`, 200},
		{"operator no tokens", operator, "POST", "/v1/tokens", `{"role":"admin"}`, 403},
		{"operator no audit", operator, "GET", "/v1/audit", "", 403},
		{"operator cannot revoke agents", operator, "DELETE", "/v1/agents/x", "", 403},
		{"auditor reads audit", auditor, "GET", "/v1/audit", "", 200},
		{"auditor verifies", auditor, "GET", "/v1/audit/verify", "", 200},
		{"auditor cannot put", auditor, "PUT", "/v1/secrets/a", put, 403},
		{"scoped inside", scoped, "PUT", "/v1/secrets/payments/db", put, 201},
		{"scoped outside", scoped, "PUT", "/v1/secrets/a", put, 403},
		{"scoped cannot delete outside", scoped, "DELETE", "/v1/secrets/a", "", 403},
		{"scoped cannot bind outside", scoped, "PUT", "/v1/bindings/c", `{"secret":"a","selector":"app=web"}`, 403},
		{"scoped cannot take over a binding", scoped, "PUT", "/v1/bindings/b", `{"secret":"payments/db","selector":"app=web"}`, 403},
		{"scoped binds inside", scoped, "PUT", "/v1/bindings/p", `{"secret":"payments/db","selector":"app=pay"}`, 200},
		{"scoped does not see a binding outside", scoped, "GET", "/v1/bindings/b", "", 404},
		// As GET: a binding outside the scope does not exist (was 403, "outside this token's scope").
		{"scoped cannot delete a binding outside", scoped, "DELETE", "/v1/bindings/b", "", 404},
		{"scoped sees its binding", scoped, "GET", "/v1/bindings/p", "", 200},
		{"scoped deletes its binding", scoped, "DELETE", "/v1/bindings/p", "", 204},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			if code, body := e.do(tt.tok, tt.method, tt.path, tt.body); code != tt.want {
				t.Fatalf("status %d, want %d: %s", code, tt.want, body)
			}
		})
	}
	var list []map[string]any
	e.json(scoped, "GET", "/v1/secrets", nil, &list)
	if len(list) != 1 || list[0]["name"] != "payments/db" {
		t.Fatalf("scoped list = %v", list)
	}
}

func TestBindingsAndEvaluate(t *testing.T) {
	e := newEnv(t)
	e.json(e.admin, "PUT", "/v1/secrets/payments/db-password", map[string]any{"value": b64("x")}, nil)
	var b map[string]any
	code := e.json(e.admin, "PUT", "/v1/bindings/web-db", map[string]any{"secret": "payments/db-password", "selector": "app=web,env in (prod,staging)", "image": "registry.example.com/web:*"}, &b)
	if code != 200 || b["file"] != "db-password" || b["mode"].(float64) != 0o400 {
		t.Fatalf("binding = %d %v", code, b)
	}
	var grants []map[string]any
	e.json(e.admin, "POST", "/v1/evaluate", map[string]any{"labels": map[string]string{"app": "web", "env": "prod"}, "image": "registry.example.com/web:1.2"}, &grants)
	if len(grants) != 1 || grants[0]["Secret"] != "payments/db-password" && grants[0]["secret"] != "payments/db-password" {
		t.Fatalf("grants = %v", grants)
	}
	e.json(e.admin, "POST", "/v1/evaluate", map[string]any{"labels": map[string]string{"app": "web", "env": "dev"}}, &grants)
	if len(grants) != 0 {
		t.Fatalf("grants for env=dev = %v", grants)
	}
	e.json(e.admin, "POST", "/v1/evaluate", map[string]any{"labels": map[string]string{"app": "web", "env": "prod"}, "image": "other/web:1"}, &grants)
	if len(grants) != 0 {
		t.Fatalf("grants for wrong image = %v", grants)
	}
	if code, _ := e.do(e.admin, "DELETE", "/v1/bindings/web-db", ""); code != 204 {
		t.Fatalf("delete binding = %d", code)
	}
	if code, _ := e.do(e.admin, "GET", "/v1/bindings/web-db", ""); code != 404 {
		t.Fatalf("deleted binding = %d", code)
	}
}

func TestAuditRecordsEveryRequestWithoutValues(t *testing.T) {
	e := newEnv(t)
	const value = "audit-leak-probe-7d1f"
	e.json(e.admin, "PUT", "/v1/secrets/a", map[string]any{"value": b64(value)}, nil)
	e.do(e.admin, "GET", "/v1/secrets/a", "")
	e.do("wrong", "GET", "/v1/secrets", "")
	var evs []map[string]any
	if code := e.json(e.admin, "GET", "/v1/audit?secret=a", nil, &evs); code != 200 {
		t.Fatalf("audit = %d", code)
	}
	actions := map[string]bool{}
	for _, ev := range evs {
		actions[ev["action"].(string)] = true
	}
	if !actions["secret.put"] || !actions["secret.show"] {
		t.Fatalf("audit actions = %v", actions)
	}
	var v map[string]any
	e.json(e.admin, "GET", "/v1/audit/verify", nil, &v)
	if v["ok"] != true {
		t.Fatalf("verify = %v", v)
	}
	raw, _ := os.ReadFile(filepath.Join(e.dir, "audit.log"))
	if !strings.Contains(string(raw), "unauthenticated") {
		t.Fatal("failed authentication not audited")
	}
	if strings.Contains(string(raw), value) || strings.Contains(string(raw), b64(value)) {
		t.Fatal("audit trail contains the value")
	}
}

func TestNoValueLeaks(t *testing.T) {
	e := newEnv(t)
	values := []string{"leak-probe-ALPHA-93f1c2", "leak-probe-BRAVO-1b2c3d"}
	for i, v := range values {
		e.json(e.admin, "PUT", fmt.Sprintf("/v1/secrets/leak/%d", i), map[string]any{"value": b64(v)}, nil)
		e.json(e.admin, "PUT", fmt.Sprintf("/v1/bindings/leak-%d", i), map[string]any{"secret": fmt.Sprintf("leak/%d", i), "selector": "app=x"}, nil)
	}
	for _, p := range []string{"/v1/secrets", "/v1/secrets/leak/0", "/v1/bindings", "/v1/audit", "/v1/tokens", "/metrics"} {
		e.do(e.admin, "GET", p, "")
	}
	e.audit.Close()
	var disk strings.Builder
	filepath.Walk(e.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			disk.Write(b)
		}
		return nil
	})
	for _, v := range values {
		for where, text := range map[string]string{"data dir": disk.String(), "responses": e.responses.String(), "logs": e.logs.String()} {
			if strings.Contains(text, v) || strings.Contains(text, b64(v)) {
				t.Errorf("value found in %s", where)
			}
		}
	}
}

func TestScopedTokensStayInScope(t *testing.T) {
	e := newEnv(t)
	scopedAdmin := e.token(authz.Admin, "payments/")
	if code, body := e.do(scopedAdmin, "POST", "/v1/tokens", `{"role":"admin"}`); code != 403 {
		t.Fatalf("scoped admin made an unscoped token: %d %s", code, body)
	}
	if code, body := e.do(scopedAdmin, "POST", "/v1/tokens", `{"role":"viewer","scope":"payments/eu/*"}`); code != 201 {
		t.Fatalf("scoped admin, narrower scope: %d %s", code, body)
	}
	e.json(e.admin, "PUT", "/v1/secrets/other/x", map[string]any{"value": b64("x")}, nil)
	e.json(e.admin, "PUT", "/v1/secrets/payments/x", map[string]any{"value": b64("x")}, nil)
	var evs []map[string]any
	e.json(scopedAdmin, "GET", "/v1/audit", nil, &evs)
	for _, ev := range evs {
		if ev["object"] == "secret:other/x" {
			t.Fatal("scoped auditor sees records outside its scope")
		}
	}
	if len(evs) == 0 {
		t.Fatal("scoped auditor sees nothing")
	}
}

func TestEnrollChecksBeforeSpendingTheToken(t *testing.T) {
	e := newEnv(t)
	var created map[string]any
	e.json(e.admin, "POST", "/v1/tokens", map[string]any{"role": "agent", "ttl": "10m"}, &created)
	join := created["token"].(string)
	key, _ := identity.NewAgentKey()
	csr, _ := identity.NewCSR(key, "node-1")
	bad := map[string]any{"join_token": join, "name": "node-1", "csr": []byte("garbage")}
	if code := e.json("", "POST", "/v1/enroll", bad, nil); code != 400 {
		t.Fatalf("bad csr: %d", code)
	}
	if code := e.json("", "POST", "/v1/enroll", map[string]any{"join_token": join, "name": "Bad Name", "csr": csr}, nil); code != 400 {
		t.Fatalf("bad name: %d", code)
	}
	var resp map[string]any
	if code := e.json("", "POST", "/v1/enroll", map[string]any{"join_token": join, "name": "node-1", "csr": csr}, &resp); code != 200 {
		t.Fatalf("enroll: %d", code)
	}
	if code := e.json("", "POST", "/v1/enroll", map[string]any{"join_token": join, "name": "node-2", "csr": csr}, nil); code != 401 {
		t.Fatalf("replayed join token: %d", code)
	}
	var agents []map[string]any
	e.json(e.admin, "GET", "/v1/agents", nil, &agents)
	if len(agents) != 1 || agents[0]["name"] != "node-1" {
		t.Fatalf("agents = %v", agents)
	}
}
