package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"coffer/internal/audit"
	"coffer/internal/authz"
	"coffer/internal/keystore"
	"coffer/internal/keystore/keystoretest"
)

const upstreamValue = "upstream-s3cr3t-value"

func TestLinkUnlinkAndWriteOnly(t *testing.T) {
	mem := keystoretest.NewMemory("vault", 0)
	mem.Set("payments/db", []byte(`{"user":"app","password":"`+upstreamValue+`"}`))
	e := newEnvWith(t, upstreams{keystores: keystore.Set{"vault": mem}})

	// A dry run reads and checks, changes nothing.
	var plan map[string]any
	if code := e.json(e.admin, "PUT", "/v1/links/payments/db-password?dry_run=true", map[string]string{"from": "vault:payments/db#password"}, &plan); code != 200 || plan["action"] != "link" || plan["state"] != "absent" {
		t.Fatalf("dry run: %d %v", code, plan)
	}
	if code, _ := e.do(e.admin, "GET", "/v1/secrets/payments/db-password", ""); code != 404 {
		t.Fatalf("dry run stored: %d", code)
	}
	var meta struct {
		Current  uint64 `json:"current_version"`
		Link     struct{ From, Upstream, Item, Key string }
		Versions []struct {
			Upstream string `json:"upstream_version"`
		}
	}
	if code := e.json(e.admin, "PUT", "/v1/links/payments/db-password", map[string]string{"from": "vault:payments/db#password"}, &meta); code != 201 {
		t.Fatalf("link: %d", code)
	}
	if meta.Current != 1 || meta.Link.From != "vault:payments/db#password" || meta.Link.Key != "password" || meta.Versions[0].Upstream != "1" {
		t.Fatalf("link answer: %+v", meta)
	}
	// The same link again: 200, nothing new.
	if code := e.json(e.admin, "PUT", "/v1/links/payments/db-password", map[string]string{"from": "vault:payments/db#password"}, &meta); code != 200 || meta.Current != 1 {
		t.Fatalf("relink same: %d %+v", code, meta)
	}
	// Show says where it comes from and how it stands.
	var view struct {
		Link       map[string]any `json:"link"`
		LinkStatus map[string]any `json:"link_status"`
	}
	if code := e.json(e.admin, "GET", "/v1/secrets/payments/db-password", nil, &view); code != 200 || view.Link["from"] != "vault:payments/db#password" || view.LinkStatus["state"] != "ok" {
		t.Fatalf("show: %d %+v", code, view)
	}
	// Write-only: put, generate and rollback on a linked secret are 409
	// with a message that says what to do.
	code, body := e.do(e.admin, "PUT", "/v1/secrets/payments/db-password", `{"value":"eA=="}`)
	if code != 409 || !strings.Contains(body, "linked to vault:payments/db#password") || !strings.Contains(body, "unlink") {
		t.Fatalf("put on a linked secret: %d %s", code, body)
	}
	if code, _ := e.do(e.admin, "PUT", "/v1/secrets/payments/db-password", `{"generate":{"length":10}}`); code != 409 {
		t.Fatalf("generate on a linked secret: %d", code)
	}
	// Upstream status.
	var ups []map[string]any
	if code := e.json(e.admin, "GET", "/v1/keystores", nil, &ups); code != 200 || len(ups) != 1 || ups[0]["name"] != "vault" {
		t.Fatalf("keystores: %d %v", code, ups)
	}
	// Unlink: dry run, then for real; 404 after.
	if code := e.json(e.admin, "DELETE", "/v1/links/payments/db-password?dry_run=true", nil, &plan); code != 200 || plan["action"] != "unlink" {
		t.Fatalf("unlink dry run: %d %v", code, plan)
	}
	if code, body := e.do(e.admin, "DELETE", "/v1/links/payments/db-password", ""); code != 204 {
		t.Fatalf("unlink: %d %s", code, body)
	}
	if code, _ := e.do(e.admin, "GET", "/v1/secrets/payments/db-password", ""); code != 404 {
		t.Fatalf("show after unlink: %d", code)
	}
	if code, _ := e.do(e.admin, "DELETE", "/v1/links/payments/db-password", ""); code != 404 {
		t.Fatalf("unlink twice: %d", code)
	}
	// The value never appeared in any response, log or audit record.
	e.assertNoLeak(upstreamValue)
	evs, err := e.audit.Query(context.Background(), audit.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	actions := map[string]bool{}
	for _, ev := range evs {
		actions[ev.Action] = true
	}
	for _, a := range []string{"secret.link", "secret.unlink", "keystore.list"} {
		if !actions[a] {
			t.Errorf("no %s record", a)
		}
	}
}

func TestLinkBadInputChangesNothing(t *testing.T) {
	mem := keystoretest.NewMemory("vault", 64)
	mem.Set("payments/db", []byte(`{"password":"`+upstreamValue+`"}`))
	mem.Set("payments/big", []byte(strings.Repeat("x", 100)))
	e := newEnvWith(t, upstreams{keystores: keystore.Set{"vault": mem}})
	if code, _ := e.do(e.admin, "PUT", "/v1/secrets/app/stored", `{"value":"eA=="}`); code != 201 {
		t.Fatal(code)
	}
	cases := []struct {
		name, body string
		code       int
		want       string
	}{
		{"app/x", `{"from":"nope:payments/db"}`, 400, `upstream \"nope\" is not configured (configured: vault)`},
		{"app/x", `{"from":"vault"}`, 400, "invalid keystore reference"},
		{"app/x", `{"from":""}`, 400, "is required"},
		{"app/x", `{}`, 400, "is required"},
		{"app/x", `{"from":"vault:payments/db","extra":1}`, 400, "unknown field"},
		{"app/x", `{"from":"vault:payments/missing"}`, 400, `keystore vault: item \"payments/missing\": not found`},
		{"app/x", `{"from":"vault:payments/db#user"}`, 400, "no such key"},
		{"app/x", `{"from":"vault:payments/big"}`, 400, "too large"},
		{"app/stored", `{"from":"vault:payments/db#password"}`, 409, "stored secret"},
		{"Bad Name", `{"from":"vault:payments/db#password"}`, 400, "invalid name"},
	}
	for _, c := range cases {
		code, body := e.do(e.admin, "PUT", "/v1/links/"+c.name, c.body)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s %s: %d %s, want %d %q", c.name, c.body, code, body, c.code, c.want)
		}
	}
	mem.SetDown(true)
	if code, body := e.do(e.admin, "PUT", "/v1/links/app/x", `{"from":"vault:payments/db#password"}`); code != http.StatusBadGateway || !strings.Contains(body, "keystore vault") {
		t.Errorf("upstream down: %d %s", code, body)
	}
	mem.SetDown(false)
	mem.SetAccess(false)
	if code, body := e.do(e.admin, "PUT", "/v1/links/app/x", `{"from":"vault:payments/db#password"}`); code != http.StatusBadGateway || !strings.Contains(body, "access denied") {
		t.Errorf("access lost: %d %s", code, body)
	}
	if code, _ := e.do(e.admin, "GET", "/v1/secrets/app/x", ""); code != 404 {
		t.Errorf("a failed link stored something: %d", code)
	}
	if code, body := e.do(e.admin, "DELETE", "/v1/links/app/stored", ""); code != 409 || !strings.Contains(body, "secret rm") {
		t.Errorf("unlink of a stored secret: %d %s", code, body)
	}
	e.assertNoLeak(upstreamValue)
}

func TestLinkRBACAndScope(t *testing.T) {
	mem := keystoretest.NewMemory("vault", 0)
	mem.Set("payments/db", []byte("pw"))
	e := newEnvWith(t, upstreams{keystores: keystore.Set{"vault": mem}})
	viewer := e.token(authz.Viewer, "")
	scoped := e.token(authz.Operator, "shop/")
	if code, _ := e.do(viewer, "PUT", "/v1/links/payments/db", `{"from":"vault:payments/db"}`); code != 403 {
		t.Errorf("viewer links: %d", code)
	}
	if code, _ := e.do(scoped, "PUT", "/v1/links/payments/db", `{"from":"vault:payments/db"}`); code != 403 {
		t.Errorf("scoped operator links outside its scope: %d", code)
	}
	if code, _ := e.do(scoped, "PUT", "/v1/links/shop/db", `{"from":"vault:payments/db"}`); code != 201 {
		t.Errorf("scoped operator links inside its scope: %d", code)
	}
	if code, _ := e.do(viewer, "DELETE", "/v1/links/shop/db", ""); code != 403 {
		t.Errorf("viewer unlinks: %d", code)
	}
	if code, _ := e.do(viewer, "GET", "/v1/keystores", ""); code != 200 {
		t.Errorf("viewer lists keystores: %d", code)
	}
}

// A server without keystores says so.
func TestLinkWithoutKeystores(t *testing.T) {
	e := newEnv(t)
	code, body := e.do(e.admin, "PUT", "/v1/links/app/x", `{"from":"vault:payments/db"}`)
	if code != 400 || !strings.Contains(body, "no keystores configured") {
		t.Fatalf("%d %s", code, body)
	}
	var ups []any
	if code := e.json(e.admin, "GET", "/v1/keystores", nil, &ups); code != 200 || len(ups) != 0 {
		t.Fatalf("keystores: %d %v", code, ups)
	}
}

// An upstream change becomes a new version by itself; readyz reports an
// upstream outage without going unready.
func TestLinkedFollowsUpstreamAndReadyzShowsDegraded(t *testing.T) {
	mem := keystoretest.NewMemory("vault", 0)
	mem.Set("payments/db", []byte("v1"))
	e := newEnvWith(t, upstreams{keystores: keystore.Set{"vault": mem}})
	if code, _ := e.do(e.admin, "PUT", "/v1/links/payments/db", `{"from":"vault:payments/db"}`); code != 201 {
		t.Fatal(code)
	}
	mem.Set("payments/db", []byte("v2"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		var m struct {
			Current uint64 `json:"current_version"`
		}
		e.json(e.admin, "GET", "/v1/secrets/payments/db", nil, &m)
		if m.Current == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the upstream change was not followed: %+v", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	mem.SetDown(true)
	for {
		code, body := e.do("", "GET", "/readyz", "")
		if code == 200 && strings.Contains(body, "upstream vault degraded") {
			break
		}
		if code != 200 || time.Now().After(deadline.Add(10*time.Second)) {
			t.Fatalf("readyz: %d %s", code, body)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
