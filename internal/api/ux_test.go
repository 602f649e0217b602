package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"coffer/internal/audit"
	"coffer/internal/authz"
)

// doH is do with request headers (k, v pairs).
func (e *env) doH(token, method, path, body string, hdr ...string) (int, string) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	e.mu.Lock()
	e.responses.Write(b)
	e.mu.Unlock()
	return resp.StatusCode, string(b)
}

// state is everything a client can see of secrets and bindings, for
// "nothing changed" checks.
func (e *env) state() string {
	e.t.Helper()
	var out strings.Builder
	for _, p := range []string{"/v1/secrets", "/v1/secrets?deleted=true", "/v1/bindings"} {
		_, body := e.do(e.admin, "GET", p, "")
		out.WriteString(body)
	}
	var list []map[string]any
	e.json(e.admin, "GET", "/v1/secrets", nil, &list)
	for _, m := range list {
		_, body := e.do(e.admin, "GET", "/v1/secrets/"+m["name"].(string), "")
		out.WriteString(body)
	}
	return out.String()
}

// auditOf returns the audit records of action.
func (e *env) auditOf(action string) []audit.Event {
	e.t.Helper()
	evs, err := e.audit.Query(context.Background(), audit.Filter{Action: action})
	if err != nil {
		e.t.Fatal(err)
	}
	return evs
}

func TestRollback(t *testing.T) {
	e := newEnv(t)
	for i := 1; i <= 3; i++ {
		e.json(e.admin, "PUT", "/v1/secrets/payments/db", map[string]any{"value": b64(fmt.Sprint("rollback-api-probe-", i))}, nil)
	}
	var meta map[string]any
	if code := e.json(e.admin, "POST", "/v1/rollback/payments/db", map[string]any{"to": 1}, &meta); code != 200 {
		t.Fatalf("rollback = %d", code)
	}
	v0 := meta["versions"].([]any)[0].(map[string]any)
	if meta["current_version"].(float64) != 4 || v0["version"].(float64) != 4 || v0["rollback_of"].(float64) != 1 {
		t.Fatalf("meta = %v", meta)
	}
	evs := e.auditOf("secret.rollback")
	if len(evs) != 1 || evs[0].Object != "secret:payments/db" || evs[0].Details["from"] != "3" || evs[0].Details["to"] != "1" || evs[0].Details["version"] != "4" {
		t.Fatalf("audit = %+v", evs)
	}

	// A secret whose name holds "rollback" rolls back too.
	e.json(e.admin, "PUT", "/v1/secrets/ops/rollback", map[string]any{"value": b64("a")}, nil)
	e.json(e.admin, "PUT", "/v1/secrets/ops/rollback", map[string]any{"value": b64("b")}, nil)
	if code, body := e.do(e.admin, "POST", "/v1/rollback/ops/rollback", `{"to":1}`); code != 200 || !strings.Contains(body, `"name": "ops/rollback"`) {
		t.Fatalf("rollback of ops/rollback = %d %s", code, body)
	}

	// Dry run: the plan, nothing stored.
	before := e.state()
	var plan map[string]any
	if code := e.json(e.admin, "POST", "/v1/rollback/payments/db?dry_run=true", map[string]any{"to": 2}, &plan); code != 200 {
		t.Fatalf("dry run = %d", code)
	}
	if plan["dry_run"] != true || plan["action"] != "rollback" || plan["version"].(float64) != 5 || plan["from"].(float64) != 4 || plan["to"].(float64) != 2 {
		t.Fatalf("plan = %v", plan)
	}
	if e.state() != before {
		t.Fatal("a dry run changed something")
	}
	if evs := e.auditOf("secret.rollback"); evs[len(evs)-1].Details["dry_run"] != "true" {
		t.Fatalf("dry run not marked in the audit trail: %+v", evs[len(evs)-1])
	}

	// Bad input: a clear error naming the reason, nothing changed.
	for i := 0; i < 10; i++ { // versions 5..14: 1..4 are pruned
		e.json(e.admin, "PUT", "/v1/secrets/payments/db", map[string]any{"value": b64(fmt.Sprint("rollback-api-probe-x", i))}, nil)
	}
	e.json(e.admin, "PUT", "/v1/secrets/payments/gone", map[string]any{"value": b64("g")}, nil)
	e.do(e.admin, "DELETE", "/v1/secrets/payments/gone", "")
	scoped := e.token(authz.Operator, "billing/")
	before = e.state()
	for _, tt := range []struct {
		desc, tok, path, body string
		want                  int
		says                  string
	}{
		{"pruned version", e.admin, "/v1/rollback/payments/db", `{"to":2}`, 410, "version 2 of secret payments/db: no longer kept: it was pruned or destroyed (versions kept: 5 to 14)"},
		{"future version", e.admin, "/v1/rollback/payments/db", `{"to":15}`, 404, "secret payments/db has no version 15 (the current version is 14)"},
		{"current version", e.admin, "/v1/rollback/payments/db", `{"to":14}`, 409, "it is the current version already"},
		{"version 0", e.admin, "/v1/rollback/payments/db", `{"to":0}`, 400, "version 0"},
		{"no version", e.admin, "/v1/rollback/payments/db", `{}`, 400, `\"to\" (the version to roll back to) is required`},
		{"negative", e.admin, "/v1/rollback/payments/db", `{"to":-1}`, 400, `field \"to\": wrong type number`},
		{"unknown field", e.admin, "/v1/rollback/payments/db", `{"to":5,"value":"eA=="}`, 400, `unknown field \"value\"`},
		{"no body", e.admin, "/v1/rollback/payments/db", ``, 400, "empty body"},
		{"deleted secret", e.admin, "/v1/rollback/payments/gone", `{"to":1}`, 404, "it was deleted at"},
		{"missing secret", e.admin, "/v1/rollback/payments/none", `{"to":1}`, 404, "secret payments/none: not found"},
		{"bad dry_run", e.admin, "/v1/rollback/payments/db?dry_run=maybe", `{"to":5}`, 400, `query parameter \"dry_run\": want true or false`},
		{"unknown parameter", e.admin, "/v1/rollback/payments/db?force=1", `{"to":5}`, 400, `unknown query parameter \"force\"`},
		{"out of scope", scoped, "/v1/rollback/payments/db", `{"to":5}`, 403, "outside this token's scope"},
		{"viewer", e.token(authz.Viewer, ""), "/v1/rollback/payments/db", `{"to":5}`, 403, "may not secret.write"},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			code, body := e.do(tt.tok, "POST", tt.path, tt.body)
			if code != tt.want || !strings.Contains(body, tt.says) {
				t.Fatalf("status %d, want %d saying %s: %s", code, tt.want, tt.says, body)
			}
		})
	}
	if e.state() != before {
		t.Fatal("a refused rollback changed something")
	}
	e.audit.Close()
	raw, _ := os.ReadFile(filepath.Join(e.dir, "audit.log"))
	for where, text := range map[string]string{"responses": e.responses.String(), "logs": e.logs.String(), "audit": string(raw)} {
		if strings.Contains(text, "rollback-api-probe") || strings.Contains(text, b64("rollback-api-probe-1")) {
			t.Errorf("a value in the %s", where)
		}
	}
}

func TestSoftDeleteUndeletePurge(t *testing.T) {
	e := newEnv(t)
	e.json(e.admin, "PUT", "/v1/secrets/payments/db", map[string]any{"value": b64("one")}, nil)
	e.json(e.admin, "PUT", "/v1/secrets/payments/db", map[string]any{"value": b64("two")}, nil)
	e.json(e.admin, "PUT", "/v1/secrets/payments/other", map[string]any{"value": b64("x")}, nil)

	var plan map[string]any
	before := e.state()
	if code := e.json(e.admin, "DELETE", "/v1/secrets/payments/db?dry_run=1", nil, &plan); code != 200 || plan["action"] != "delete" || plan["purge_after"] == nil {
		t.Fatalf("delete dry run = %d %v", code, plan)
	}
	if e.state() != before {
		t.Fatal("dry run deleted")
	}
	if code, _ := e.do(e.admin, "DELETE", "/v1/secrets/payments/db", ""); code != 204 {
		t.Fatalf("delete = %d", code)
	}
	if code, body := e.do(e.admin, "GET", "/v1/secrets/payments/db", ""); code != 404 || !strings.Contains(body, "can be restored (undelete) until") {
		t.Fatalf("show deleted = %d %s", code, body)
	}
	var deleted []map[string]any
	if code := e.json(e.admin, "GET", "/v1/secrets?deleted=true", nil, &deleted); code != 200 || len(deleted) != 1 ||
		deleted[0]["name"] != "payments/db" || deleted[0]["purge_after"] == nil || deleted[0]["deleted"] == nil {
		t.Fatalf("deleted list = %d %v", code, deleted)
	}
	if e.json(e.token(authz.Viewer, "billing/"), "GET", "/v1/secrets?deleted=true", nil, &deleted); len(deleted) != 0 {
		t.Fatalf("out-of-scope deleted secrets listed: %v", deleted)
	}
	var meta map[string]any
	if code := e.json(e.admin, "POST", "/v1/undelete/payments/db", nil, &meta); code != 200 || meta["current_version"].(float64) != 2 || len(meta["versions"].([]any)) != 2 {
		t.Fatalf("undelete = %d %v", code, meta)
	}
	if code, _ := e.do(e.admin, "GET", "/v1/secrets/payments/db", ""); code != 200 {
		t.Fatalf("show undeleted = %d", code)
	}
	if evs := e.auditOf("secret.undelete"); len(evs) != 1 || evs[0].Details["version"] != "2" {
		t.Fatalf("undelete audit = %+v", evs)
	}

	// Purge: a live secret at once; a deleted one too.
	if code, _ := e.do(e.admin, "DELETE", "/v1/secrets/payments/db?purge=true", ""); code != 204 {
		t.Fatalf("purge = %d", code)
	}
	e.do(e.admin, "DELETE", "/v1/secrets/payments/other", "")
	if code, _ := e.do(e.admin, "DELETE", "/v1/secrets/payments/other?purge=true", ""); code != 204 {
		t.Fatalf("purge of a deleted secret = %d", code)
	}
	if evs := e.auditOf("secret.delete"); evs[len(evs)-1].Details["purge"] != "true" || evs[len(evs)-1].Details["was"] != "deleted" {
		t.Fatalf("purge audit = %+v", evs[len(evs)-1])
	}

	e.json(e.admin, "PUT", "/v1/secrets/payments/live", map[string]any{"value": b64("x")}, nil)
	before = e.state()
	for _, tt := range []struct {
		desc, method, path string
		want               int
		says               string
	}{
		{"undelete purged", "POST", "/v1/undelete/payments/db", 404, "never deleted, or purged"},
		{"undelete never deleted", "POST", "/v1/undelete/payments/never", 404, "never deleted, or purged"},
		{"undelete live", "POST", "/v1/undelete/payments/live", 409, "it is not deleted"},
		{"purge purged", "DELETE", "/v1/secrets/payments/db?purge=true", 404, "not found"},
		{"delete purged", "DELETE", "/v1/secrets/payments/db", 404, "not found"},
		{"bad purge", "DELETE", "/v1/secrets/payments/live?purge=yes", 400, `query parameter \"purge\"`},
		{"unknown parameter", "DELETE", "/v1/secrets/payments/live?force=true", 400, `unknown query parameter \"force\" (this operation takes purge, dry_run)`},
		{"repeated parameter", "DELETE", "/v1/secrets/payments/live?purge=false&purge=true", 400, "given 2 times"},
		{"bad deleted", "GET", "/v1/secrets?deleted=2", 400, `query parameter \"deleted\"`},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			code, body := e.do(e.admin, tt.method, tt.path, "")
			if code != tt.want || !strings.Contains(body, tt.says) {
				t.Fatalf("status %d, want %d saying %s: %s", code, tt.want, tt.says, body)
			}
		})
	}
	if code, body := e.do(e.admin, "POST", "/v1/undelete/payments/live", `{"x":1}`); code != 400 || !strings.Contains(body, "undelete takes no body") {
		t.Fatalf("undelete with a body = %d %s", code, body)
	}
	if e.state() != before {
		t.Fatal("a refused call changed something")
	}
}

func TestBindingCreateOnlyAndReplaceOnly(t *testing.T) {
	e := newEnv(t)
	e.json(e.admin, "PUT", "/v1/secrets/payments/db", map[string]any{"value": b64("x")}, nil)
	body := `{"secret":"payments/db","selector":"app=web"}`
	if code, resp := e.doH(e.admin, "PUT", "/v1/bindings/web-db", body, "If-None-Match", "*"); code != 200 {
		t.Fatalf("create = %d %s", code, resp)
	}
	before := e.state()
	for _, tt := range []struct {
		desc, body string
		hdr        []string
		want       int
		says       string
	}{
		{"create over existing", `{"secret":"payments/db","selector":"app=other"}`, []string{"If-None-Match", "*"}, 409, "binding web-db: conflict: it already exists"},
		{"replace missing", body, []string{"If-Match", "*"}, 404, "binding nope: not found"},
		{"etag", body, []string{"If-Match", `"abc"`}, 400, `take only \"*\"`},
		{"both", body, []string{"If-Match", "*", "If-None-Match", "*"}, 400, "not both"},
		{"bad managed_by", `{"secret":"payments/db","selector":"app=web","managed_by":"a b"}`, nil, 400, `managed_by \"a b\"`},
		{"lone star image", `{"secret":"payments/db","selector":"app=web","image":"*"}`, nil, 400, `image \"*\": a lone \"*\"`},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			path := "/v1/bindings/web-db"
			if tt.desc == "replace missing" {
				path = "/v1/bindings/nope"
			}
			code, resp := e.doH(e.admin, "PUT", path, tt.body, tt.hdr...)
			if code != tt.want || !strings.Contains(resp, tt.says) {
				t.Fatalf("status %d, want %d saying %s: %s", code, tt.want, tt.says, resp)
			}
		})
	}
	if e.state() != before {
		t.Fatal("a refused write changed something")
	}

	// A dry-run replace shows before and after; then for real, with
	// managed_by, which GET and the list return.
	var plan struct {
		DryRun  bool `json:"dry_run"`
		Updated []struct {
			Before, After map[string]any
		} `json:"updated"`
		Effects []any `json:"effects"`
	}
	code, resp := e.doH(e.admin, "PUT", "/v1/bindings/web-db?dry_run=true", `{"secret":"payments/db","selector":"app=web,env=prod"}`, "If-Match", "*")
	if err := json.Unmarshal([]byte(resp), &plan); code != 200 || err != nil || !plan.DryRun || len(plan.Updated) != 1 ||
		plan.Updated[0].Before["selector"] != "app=web" || plan.Updated[0].After["selector"] != "app=web,env=prod" || plan.Effects == nil {
		t.Fatalf("dry run = %d %s", code, resp)
	}
	if e.state() != before {
		t.Fatal("dry run changed the binding")
	}
	if code, resp := e.doH(e.admin, "PUT", "/v1/bindings/web-db", `{"secret":"payments/db","selector":"app=web","managed_by":"team-a"}`, "If-Match", "*"); code != 200 || !strings.Contains(resp, `"managed_by": "team-a"`) {
		t.Fatalf("replace = %d %s", code, resp)
	}
	var shown map[string]any
	if e.json(e.admin, "GET", "/v1/bindings/web-db", nil, &shown); shown["managed_by"] != "team-a" {
		t.Fatalf("shown = %v", shown)
	}
	if evs := e.auditOf("binding.put"); evs[len(evs)-1].Details["replaced"] != "true" || evs[len(evs)-1].Details["if"] != "exists" {
		t.Fatalf("audit = %+v", evs[len(evs)-1])
	}

	// Delete: a dry run, then for real; out of scope is 404 like GET, with
	// the same message.
	var del map[string]any
	if code := e.json(e.admin, "DELETE", "/v1/bindings/web-db?dry_run=true", nil, &del); code != 200 || len(del["deleted"].([]any)) != 1 {
		t.Fatalf("delete dry run = %d %v", code, del)
	}
	scoped := e.token(authz.Operator, "billing/")
	getCode, getBody := e.do(scoped, "GET", "/v1/bindings/web-db", "")
	rmCode, rmBody := e.do(scoped, "DELETE", "/v1/bindings/web-db", "")
	if getCode != 404 || rmCode != 404 || getBody != rmBody || strings.Contains(rmBody, "scope") {
		t.Fatalf("out of scope: GET %d %s, DELETE %d %s", getCode, getBody, rmCode, rmBody)
	}
	if code, _ := e.do(scoped, "DELETE", "/v1/bindings/web-db?dry_run=true", ""); code != 404 {
		t.Fatalf("out-of-scope dry run = %d", code)
	}
	if code, _ := e.do(e.admin, "GET", "/v1/bindings/web-db", ""); code != 200 {
		t.Fatal("the binding is gone")
	}
	if code, _ := e.do(e.admin, "DELETE", "/v1/bindings/web-db", ""); code != 204 {
		t.Fatalf("delete = %d", code)
	}
}

func TestEvaluateExplain(t *testing.T) {
	e := newEnv(t)
	for _, s := range []string{"payments/db", "payments/db-ro", "payments/img", "billing/db"} {
		e.json(e.admin, "PUT", "/v1/secrets/"+s, map[string]any{"value": b64("x")}, nil)
	}
	for name, b := range map[string]map[string]any{
		"a-db":     {"secret": "payments/db", "selector": "app=web", "file": "db"},
		"b-db-ro":  {"secret": "payments/db-ro", "selector": "app=web", "file": "db"}, // hidden by a-db
		"0-bill":   {"secret": "billing/db", "selector": "app=web", "file": "bill"},   // out of scope for payments/
		"c-prod":   {"secret": "payments/db", "selector": "app=web", "file": "prod", "hosts": "env=prod"},
		"d-img":    {"secret": "payments/img", "selector": "app=web", "image": "registry.example.com/pay/*"},
		"e-api":    {"secret": "payments/db", "selector": "app=api,env in (prod,staging)", "file": "api"},
		"f-ilabel": {"secret": "payments/img", "selector": "image.label/tier=gold", "image": "registry.example.com/pay/*", "file": "ilabel"},
	} {
		if code := e.json(e.admin, "PUT", "/v1/bindings/"+name, b, nil); code != 200 {
			t.Fatalf("bind %s: %d", name, code)
		}
	}
	var ex struct {
		Granted  []map[string]any `json:"granted"`
		Shadowed []struct {
			Binding, Secret, File, By string
		} `json:"shadowed"`
		Unmatched []struct {
			Binding, Secret, Reason string
		} `json:"unmatched"`
		UnmatchedTotal int `json:"unmatched_total"`
	}
	req := map[string]any{"labels": map[string]string{"app": "web", "image.label/tier": "gold"}, "image": "evil.example.com/pay/x:1", "host_labels": map[string]string{"env": "dev"}}
	if code := e.json(e.admin, "POST", "/v1/evaluate?explain=true", req, &ex); code != 200 {
		t.Fatalf("explain = %d", code)
	}
	if len(ex.Granted) != 2 || len(ex.Shadowed) != 1 || ex.Shadowed[0].Binding != "b-db-ro" || ex.Shadowed[0].By != "a-db" {
		t.Fatalf("granted %v, shadowed %+v", ex.Granted, ex.Shadowed)
	}
	reasons := map[string]string{}
	for _, u := range ex.Unmatched {
		reasons[u.Binding] = u.Reason
	}
	want := map[string]string{
		"c-prod":   "hosts: env=prod is not met: the host has env=dev",
		"d-img":    "image: evil.example.com/pay/x:1 does not match registry.example.com/pay/*",
		"e-api":    "selector: app=api is not met: the container has app=web",
		"f-ilabel": "selector: image.label/tier=gold is not met: the image has no labels",
	}
	if !reflect.DeepEqual(reasons, want) || ex.UnmatchedTotal != 4 {
		t.Fatalf("unmatched = %v (total %d), want %v", reasons, ex.UnmatchedTotal, want)
	}
	// Near misses (hosts, image) come before selector misses.
	if ex.Unmatched[0].Binding != "c-prod" || ex.Unmatched[1].Binding != "d-img" {
		t.Fatalf("order = %+v", ex.Unmatched)
	}
	// Without explain: the grants, as before.
	var grants []map[string]any
	if code := e.json(e.admin, "POST", "/v1/evaluate", req, &grants); code != 200 || len(grants) != 2 {
		t.Fatalf("evaluate = %d %v", code, grants)
	}

	// A scoped token: nothing of billing/, and a payments/ grant hidden by
	// a billing/ binding shows no name for the winner.
	e.json(e.admin, "PUT", "/v1/bindings/0-bill", map[string]any{"secret": "billing/db", "selector": "app=web", "file": "db"}, nil)
	scoped := e.token(authz.Viewer, "payments/")
	_, body := e.do(scoped, "POST", "/v1/evaluate?explain=1", `{"labels":{"app":"web"}}`)
	if strings.Contains(body, "billing") || strings.Contains(body, "0-bill") {
		t.Fatalf("scoped explain shows another scope's binding: %s", body)
	}
	if err := json.Unmarshal([]byte(body), &ex); err != nil || len(ex.Shadowed) != 2 || ex.Shadowed[0].By != "" {
		t.Fatalf("scoped explain: %v %s", err, body)
	}
	if code, body := e.do(e.admin, "POST", "/v1/evaluate?explain=perhaps", `{"labels":{}}`); code != 400 || !strings.Contains(body, "explain") {
		t.Fatalf("bad explain = %d %s", code, body)
	}
}

func TestApply(t *testing.T) {
	e := newEnv(t)
	for _, s := range []string{"payments/db", "payments/key", "billing/db"} {
		e.json(e.admin, "PUT", "/v1/secrets/"+s, map[string]any{"value": b64("x")}, nil)
	}
	e.json(e.admin, "PUT", "/v1/bindings/by-hand", map[string]any{"secret": "payments/db", "selector": "app=hand"}, nil)
	e.json(e.admin, "PUT", "/v1/bindings/billing", map[string]any{"secret": "billing/db", "selector": "app=bill", "managed_by": "coffer-apply"}, nil)

	apply := func(tok, query string, body any) (int, map[string]any, string) {
		b, _ := json.Marshal(body)
		code, resp := e.do(tok, "POST", "/v1/apply"+query, string(b))
		var plan map[string]any
		json.Unmarshal([]byte(resp), &plan)
		return code, plan, resp
	}
	files := map[string]any{"bindings": []map[string]any{
		{"name": "web-db", "secret": "payments/db", "selector": "app=web"},
		{"name": "web-key", "secret": "payments/key", "selector": "app=web", "mode": 288},
	}, "prune": true}
	before := e.state()
	code, plan, resp := apply(e.admin, "?dry_run=true", files)
	if code != 200 || plan["dry_run"] != true || len(plan["created"].([]any)) != 2 || len(plan["deleted"].([]any)) != 1 {
		t.Fatalf("dry run = %d %s", code, resp)
	}
	if e.state() != before {
		t.Fatal("dry run changed something")
	}
	// A scoped operator's apply never prunes another scope's binding.
	scoped := e.token(authz.Operator, "payments/")
	code, plan, resp = apply(scoped, "", files)
	if code != 200 || len(plan["created"].([]any)) != 2 || len(plan["deleted"].([]any)) != 0 {
		t.Fatalf("apply = %d %s", code, resp)
	}
	if code, _ := e.do(e.admin, "GET", "/v1/bindings/billing", ""); code != 200 {
		t.Fatal("another scope's binding was pruned")
	}
	if evs := e.auditOf("binding.apply"); len(evs) != 2 || evs[1].Details["created"] != "web-db,web-key" || evs[1].Details["owner"] != "coffer-apply" {
		t.Fatalf("audit = %+v", evs)
	}
	// Again: a no-op. Then without web-key: pruned.
	if code, plan, resp := apply(scoped, "", files); code != 200 || len(plan["unchanged"].([]any)) != 2 || len(plan["created"].([]any))+len(plan["updated"].([]any)) != 0 {
		t.Fatalf("again = %d %s", code, resp)
	}
	files["bindings"] = files["bindings"].([]map[string]any)[:1]
	if code, plan, resp := apply(scoped, "", files); code != 200 || len(plan["deleted"].([]any)) != 1 {
		t.Fatalf("prune = %d %s", code, resp)
	}
	if code, _ := e.do(e.admin, "GET", "/v1/bindings/by-hand", ""); code != 200 {
		t.Fatal("a binding made by hand was pruned")
	}

	before = e.state()
	for _, tt := range []struct {
		desc, tok, body string
		want            int
		says            string
	}{
		{"unknown field", e.admin, `{"bindings":[{"name":"x","secret":"payments/db","selector":"app=x","selectr":"y"}]}`, 400, `unknown field \"selectr\"`},
		{"invalid selector", e.admin, `{"bindings":[{"name":"x","secret":"payments/db","selector":"app=x"},{"name":"y","secret":"payments/db","selector":"app in (x"}]}`, 400, `invalid binding \"y\": selector`},
		{"wrong type", e.admin, `{"bindings":[{"name":"x","secret":"payments/db","selector":"app=x","uid":"0"}]}`, 400, `field \"bindings.uid\": wrong type string`},
		{"duplicate", e.admin, `{"bindings":[{"name":"x","secret":"payments/db","selector":"app=x"},{"name":"x","secret":"payments/db","selector":"app=y"}]}`, 400, "given twice"},
		{"no bindings", e.admin, `{"prune":true}`, 400, `"bindings\" is required`},
		{"bad owner", e.admin, `{"bindings":[],"owner":"no spaces"}`, 400, `owner \"no spaces\"`},
		{"outside scope", scoped, `{"bindings":[{"name":"x","secret":"billing/db","selector":"app=x"}]}`, 403, "binding x: permission denied"},
		{"takes over outside", scoped, `{"bindings":[{"name":"billing","secret":"payments/db","selector":"app=x"}]}`, 403, "serves a secret outside"},
		{"viewer", e.token(authz.Viewer, ""), `{"bindings":[]}`, 403, "may not binding.write"},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			code, body := e.do(tt.tok, "POST", "/v1/apply", tt.body)
			if code != tt.want || !strings.Contains(body, tt.says) {
				t.Fatalf("status %d, want %d saying %s: %s", code, tt.want, tt.says, body)
			}
		})
	}
	if e.state() != before {
		t.Fatal("a refused apply changed something")
	}
}
