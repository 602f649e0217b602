package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coffer/internal/api"
	"coffer/internal/audit"
	"coffer/internal/authz"
	cldap "coffer/internal/directory/ldap"
	"coffer/internal/directory/ldap/ldaptest"
)

// loginEnv is an API stack whose logins go to a real slapd.
func loginEnv(t *testing.T) (*env, *ldaptest.Server) {
	t.Helper()
	srv := ldaptest.Start(t)
	cfg := srv.Config()
	d, err := cldap.New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	vc := d.Config()
	e := newEnv(t, func(c *api.Config) {
		c.Login = &api.Login{Directory: d, Groups: vc.Mapping(), TTL: vc.SessionTTL, Source: "ldap"}
	})
	return e, srv
}

func loginBody(user, password string) string {
	b, _ := json.Marshal(map[string]string{"username": user, "password": password})
	return string(b)
}

func (e *env) login(user, password string) (int, api.LoginResponse, string) {
	e.t.Helper()
	code, body := e.do("", "POST", "/v1/login", loginBody(user, password))
	var out api.LoginResponse
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(body), &out); err != nil {
			e.t.Fatal(err)
		}
	}
	return code, out, body
}

// from sends a login request from addr.
func (e *env) from(addr, body string) (int, string) {
	e.t.Helper()
	r := httptest.NewRequest("POST", "/v1/login", strings.NewReader(body))
	r.RemoteAddr = addr + ":40000"
	w := httptest.NewRecorder()
	e.h.ServeHTTP(w, r)
	e.mu.Lock()
	e.responses.Write(w.Body.Bytes())
	e.mu.Unlock()
	return w.Code, w.Body.String()
}

func put(e *env, tok, name string) int {
	e.t.Helper()
	code, _ := e.do(tok, "PUT", "/v1/secrets/"+name, `{"value":"czNjcjN0"}`)
	return code
}

func TestLogin(t *testing.T) {
	e, _ := loginEnv(t)
	// Anyone may ask whether directory logins are on (a login page does).
	if code, body := e.do("", "GET", "/v1/login", ""); code != http.StatusOK || !strings.Contains(body, `"directory": true`) {
		t.Fatalf("GET /v1/login: %d %q", code, body)
	}

	// alice is in two mapped groups (operator on payments/, auditor) and
	// one unmapped one.
	code, alice, body := e.login("alice", ldaptest.Password("alice"))
	if code != http.StatusOK {
		t.Fatalf("alice: %d %s", code, body)
	}
	if alice.User != "ldap:alice" || len(alice.Grants) != 2 || len(alice.Groups) != 2 || alice.Expires.IsZero() {
		t.Fatalf("alice = %+v", alice)
	}
	var who api.WhoamiResponse
	if c := e.json(alice.Token, "GET", "/v1/whoami", nil, &who); c != 200 || who.ID != "ldap:alice" || who.Session != alice.ID || len(who.Grants) != 2 {
		t.Fatalf("whoami %d %+v", c, who)
	}
	if c := put(e, alice.Token, "payments/db"); c != http.StatusCreated {
		t.Errorf("alice put payments/db: %d", c)
	}
	if c := put(e, alice.Token, "web/db"); c != http.StatusForbidden {
		t.Errorf("alice put web/db (operator only on payments/): %d", c)
	}
	if c, _ := e.do(alice.Token, "GET", "/v1/audit", ""); c != 200 {
		t.Errorf("alice audit (auditor): %d", c)
	}
	if c, _ := e.do(alice.Token, "GET", "/v1/tokens", ""); c != http.StatusForbidden {
		t.Errorf("alice tokens: %d", c)
	}
	// The case of the name does not make another person.
	if code, a2, _ := e.login(" Alice ", ldaptest.Password("alice")); code != 200 || a2.User != "ldap:alice" {
		t.Errorf("Alice: %d %+v", code, a2)
	}

	// carol: one group, operator on payments/ only.
	code, carol, _ := e.login("carol", ldaptest.Password("carol"))
	if code != 200 || len(carol.Grants) != 1 || carol.Grants[0] != (authz.Grant{Role: authz.Operator, Scope: "payments/"}) {
		t.Fatalf("carol: %d %+v", code, carol)
	}
	if c, _ := e.do(carol.Token, "GET", "/v1/audit", ""); c != http.StatusForbidden {
		t.Errorf("carol audit: %d", c)
	}
	// Her secret list shows payments/ only.
	put(e, e.admin, "web/other")
	_, list := e.do(carol.Token, "GET", "/v1/secrets", "")
	if strings.Contains(list, "web/other") || !strings.Contains(list, "payments/db") {
		t.Errorf("carol's list: %s", list)
	}

	// Every refusal is the same answer. (Each from its own network, so
	// that the throttle does not answer instead.)
	generic := ""
	for i, c := range []struct{ user, password, why string }{
		{"alice", "wrong", "wrong password"},
		{"mallory", "x", "unknown user"},
		{"bob", ldaptest.Password("bob"), "no mapped group"},
		{"dave", ldaptest.Password("dave"), "disabled"},
		{"*", ldaptest.Password("alice"), "injection *"},
		{"al*", ldaptest.Password("alice"), "injection al*"},
		{"*)(uid=*", ldaptest.Password("alice"), "injection )(uid=*"},
	} {
		code, body := e.from(fmt.Sprintf("10.2.%d.1", i), loginBody(c.user, c.password))
		if code != http.StatusUnauthorized {
			t.Errorf("%s: %d %s", c.why, code, body)
		}
		if generic == "" {
			generic = body
		} else if body != generic {
			t.Errorf("%s: answer %q differs from %q", c.why, body, generic)
		}
	}
	// Input refused before the directory is asked, naming the field.
	for _, c := range []struct{ body, want string }{
		{loginBody("alice\x00", ldaptest.Password("alice")), "username"},
		{loginBody("alice", ""), "password: required"},
		{loginBody("", "x"), "username: required"},
		{loginBody("alice", "a\x00b"), "password"},
		{`{"username":"alice"}`, "password: required"},
		{`{"username":"alice","password":"x","otp":1}`, "otp"},
		{`{"username":"alice","password":5}`, "password"},
		{`{"username":"alice","password":"x"} {}`, "malformed"},
		{``, "empty body"},
	} {
		code, body := e.from("10.3.0.1", c.body)
		if code != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("%q: %d %s, want 400 naming %q", c.body, code, body, c.want)
		}
	}
	if code, _ := e.do("", "POST", "/v1/login", `{"username":"alice","password":"`+strings.Repeat("x", 5000)+`"}`); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized: %d", code)
	}
	// JSON escapes in the password decode as JSON says.
	if code, _ := e.do("", "POST", "/v1/login", `{"username":"carol","password":"C4rol \u0028pw\u0029 \u002a"}`); code != 200 {
		t.Errorf("escaped password: %d", code)
	}

	// Audit: the person is the actor; failures keep their reason; no
	// password anywhere in the trail, the logs or the responses.
	var secretPut *audit.Event
	for _, ev := range e.auditOf("secret.put") {
		if ev.Object == "secret:payments/db" {
			secretPut = &ev
		}
	}
	if secretPut == nil || secretPut.Actor != "ldap:alice" {
		t.Errorf("secret.put record: %+v", secretPut)
	}
	reasons := map[string]bool{}
	okLogins := 0
	for _, ev := range e.auditOf("session.login") {
		if ev.Result == "ok" {
			okLogins++
			if !strings.HasPrefix(ev.Actor, "ldap:") || !strings.HasPrefix(ev.Object, "token:") {
				t.Errorf("login record %+v", ev)
			}
		}
		if r := ev.Details["reason"]; r != "" {
			reasons[r] = true
		}
	}
	for _, r := range []string{"wrong_password", "unknown_user", "no_mapped_group", "disabled"} {
		if !reasons[r] {
			t.Errorf("no session.login record with reason %s (have %v)", r, reasons)
		}
	}
	if okLogins != 4 {
		t.Errorf("%d successful logins recorded, want 4", okLogins)
	}
	trail, _ := os.ReadFile(filepath.Join(e.dir, "audit.log"))
	for _, u := range ldaptest.Users {
		for what, hay := range map[string]string{"audit trail": string(trail), "logs": e.logs.String(), "responses": e.responses.String()} {
			if strings.Contains(hay, u.Password) {
				t.Errorf("%s's password is in the %s", u.Name, what)
			}
		}
	}

	// An admin sees the session and can revoke it; logout revokes one's own.
	var toks []map[string]any
	e.json(e.admin, "GET", "/v1/tokens", nil, &toks)
	found := false
	for _, tk := range toks {
		if tk["id"] == carol.ID && tk["user"] == "ldap:carol" {
			found = true
		}
	}
	if !found {
		t.Errorf("carol's session not listed: %v", toks)
	}
	if c, body := e.do(alice.Token, "POST", "/v1/logout", ""); c != http.StatusNoContent {
		t.Fatalf("logout: %d %s", c, body)
	}
	if c, _ := e.do(alice.Token, "GET", "/v1/whoami", ""); c != http.StatusUnauthorized {
		t.Errorf("after logout: %d", c)
	}
	if c, body := e.do(e.admin, "POST", "/v1/logout", ""); c != http.StatusBadRequest || !strings.Contains(body, "not a login session") {
		t.Errorf("logout with a plain token: %d %s", c, body)
	}
	if c, _ := e.do(e.admin, "GET", "/v1/whoami", ""); c != 200 {
		t.Errorf("the admin token was revoked by logout: %d", c)
	}
	if evs := e.auditOf("session.logout"); len(evs) < 1 || evs[0].Actor != "ldap:alice" {
		t.Errorf("logout records: %+v", evs)
	}
}

// While the directory is down, logins are 503 and sessions keep working.
func TestLoginDirectoryDown(t *testing.T) {
	e, srv := loginEnv(t)
	code, carol, body := e.login("carol", ldaptest.Password("carol"))
	if code != 200 {
		t.Fatalf("carol: %d %s", code, body)
	}
	srv.Stop()
	code, _, body = e.login("alice", ldaptest.Password("alice"))
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "unavailable") {
		t.Fatalf("login while down: %d %s", code, body)
	}
	if c := put(e, carol.Token, "payments/during-outage"); c != http.StatusCreated {
		t.Errorf("carol's session while the directory is down: %d", c)
	}
	// An outage is not a failed authentication: no lock-out follows.
	for range 6 {
		e.login("alice", ldaptest.Password("alice"))
	}
	srv.Restart()
	if code, _, body := e.login("alice", ldaptest.Password("alice")); code != 200 {
		t.Fatalf("after restart: %d %s", code, body)
	}
}

// Failed logins are throttled per username (whatever the network) and
// per network (whatever the username).
func TestLoginThrottle(t *testing.T) {
	e, _ := loginEnv(t)
	from := func(addr, user, password string) int {
		c, _ := e.from(addr, loginBody(user, password))
		return c
	}
	// Spelling the name differently is the same bucket.
	for i, name := range []string{"alice", "Alice", " alice", "ALICE ", "ａｌｉｃｅ"} {
		if c := from("10.0."+string(rune('0'+i))+".1", name, "wrong"); c != http.StatusUnauthorized {
			t.Fatalf("failure %d: %d", i, c)
		}
	}
	if c := from("10.0.9.1", "alice", ldaptest.Password("alice")); c != http.StatusTooManyRequests {
		t.Errorf("alice after 5 failures from 5 networks: %d, want 429", c)
	}
	if c := from("10.0.9.1", "carol", ldaptest.Password("carol")); c != http.StatusOK {
		t.Errorf("carol from a fresh network: %d", c)
	}
	for _, u := range []string{"u1", "u2", "u3", "u4", "u5"} {
		from("10.1.0.7", u, "x")
	}
	if c := from("10.1.0.8", "carol", ldaptest.Password("carol")); c != http.StatusTooManyRequests {
		t.Errorf("carol from a network with 5 failures: %d, want 429", c)
	}
}

func TestLoginNotConfigured(t *testing.T) {
	e := newEnv(t)
	if code, body := e.do("", "POST", "/v1/login", loginBody("alice", "x")); code != http.StatusNotFound || !strings.Contains(body, "ldap") {
		t.Fatalf("%d %s", code, body)
	}
	if code, body := e.do("", "GET", "/v1/login", ""); code != http.StatusOK || !strings.Contains(body, `"directory": false`) {
		t.Fatalf("GET /v1/login without a directory: %d %q", code, body)
	}
}
