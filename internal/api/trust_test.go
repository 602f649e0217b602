package api_test

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"

	"coffer/internal/authz"
	"coffer/internal/identity"
)

// mint creates a token as tok and returns the token and its record; it
// fails the test unless the answer is 201.
func (e *env) mint(tok string, req map[string]any) (string, map[string]any) {
	e.t.Helper()
	var rec map[string]any
	b, _ := json.Marshal(req)
	code, body := e.do(tok, "POST", "/v1/tokens", string(b))
	if code != http.StatusCreated {
		e.t.Fatalf("create token %v: %d %s", req, code, body)
	}
	if err := json.Unmarshal([]byte(body), &rec); err != nil {
		e.t.Fatal(err)
	}
	return rec["token"].(string), rec
}

// enroll posts an enrollment for name with join and returns the status,
// the certificate (on 200) and the body.
func (e *env) enroll(join, name string) (int, *x509.Certificate, string) {
	e.t.Helper()
	key, _ := identity.NewAgentKey()
	csr, _ := identity.NewCSR(key, name)
	b, _ := json.Marshal(map[string]any{"join_token": join, "name": name, "csr": csr})
	code, body := e.do("", "POST", "/v1/enroll", string(b))
	if code != http.StatusOK {
		return code, nil, body
	}
	var resp struct {
		Certificate []byte `json:"certificate"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		e.t.Fatal(err)
	}
	c, err := x509.ParseCertificate(resp.Certificate)
	if err != nil {
		e.t.Fatal(err)
	}
	return code, c, body
}

// mustEnroll enrolls name with a join token made by tok with req.
func (e *env) mustEnroll(tok, name string, req map[string]any) *x509.Certificate {
	e.t.Helper()
	req["role"] = "agent"
	join, _ := e.mint(tok, req)
	code, c, body := e.enroll(join, name)
	if code != http.StatusOK {
		e.t.Fatalf("enroll %s: %d %s", name, code, body)
	}
	return c
}

type agentView struct {
	Name     string            `json:"name"`
	Enrolled string            `json:"enrolled"`
	Labels   map[string]string `json:"labels"`
	Scope    string            `json:"scope"`
}

func (e *env) agents(tok string) map[string]agentView {
	e.t.Helper()
	var list []agentView
	if code := e.json(tok, "GET", "/v1/agents", nil, &list); code != http.StatusOK {
		e.t.Fatalf("agent ls: %d", code)
	}
	out := map[string]agentView{}
	for _, a := range list {
		out[a.Name] = a
	}
	return out
}

func (e *env) tokenIDs(tok string) map[string]string {
	e.t.Helper()
	var list []map[string]any
	if code := e.json(tok, "GET", "/v1/tokens", nil, &list); code != http.StatusOK {
		e.t.Fatalf("token ls: %d", code)
	}
	out := map[string]string{}
	for _, t := range list {
		s, _ := t["scope"].(string)
		out[t["id"].(string)] = s
	}
	return out
}

func idOf(tok string) string { return strings.Split(tok, "_")[1] }

// TestScopedTokensManageOnlyTokensInScope: a scoped admin lists, revokes
// and mints only tokens within its scope; an unscoped token is outside
// every scope, and revoking one answers exactly like an unknown id.
func TestScopedTokensManageOnlyTokensInScope(t *testing.T) {
	e := newEnv(t)
	scopedAdmin := e.token(authz.Admin, "payments/*")
	scopedOperator := e.token(authz.Operator, "payments/*")
	otherAdmin := e.token(authz.Admin, "other/*")
	unscopedViewer := e.token(authz.Viewer, "")
	narrow, _ := e.mint(e.admin, map[string]any{"role": "viewer", "scope": "payments/eu/*"})

	// List.
	seen := e.tokenIDs(scopedAdmin)
	for _, tok := range []string{scopedAdmin, scopedOperator, narrow} {
		if _, ok := seen[idOf(tok)]; !ok {
			t.Errorf("scoped admin does not see token %s in its scope", idOf(tok))
		}
	}
	for _, tok := range []string{e.admin, otherAdmin, unscopedViewer} {
		if _, ok := seen[idOf(tok)]; ok {
			t.Errorf("scoped admin sees token %s outside its scope", idOf(tok))
		}
	}
	if all := e.tokenIDs(e.admin); len(all) != 6 {
		t.Errorf("unscoped admin sees %d tokens, want 6", len(all))
	}

	// Revoke: outside the scope is a 404 indistinguishable from an unknown id.
	_, missing := e.do(scopedAdmin, "DELETE", "/v1/tokens/0123456789abcdef", "")
	for _, tok := range []string{e.admin, otherAdmin, unscopedViewer} {
		code, body := e.do(scopedAdmin, "DELETE", "/v1/tokens/"+idOf(tok), "")
		if code != http.StatusNotFound || strings.ReplaceAll(body, idOf(tok), "0123456789abcdef") != missing {
			t.Errorf("scoped admin revoking %s: %d %s; want 404 like %s", idOf(tok), code, body, missing)
		}
	}
	if code, _ := e.do(e.admin, "GET", "/v1/tokens", ""); code != http.StatusOK {
		t.Fatal("the unscoped admin token was revoked by a scoped admin")
	}
	if code, body := e.do(scopedAdmin, "DELETE", "/v1/tokens/"+idOf(narrow), ""); code != http.StatusNoContent {
		t.Fatalf("scoped admin revoking a token in its scope: %d %s", code, body)
	}
	// A scoped operator manages no tokens at all.
	for _, req := range [][2]string{{"GET", "/v1/tokens"}, {"POST", "/v1/tokens"}, {"DELETE", "/v1/tokens/" + idOf(scopedAdmin)}} {
		if code, _ := e.do(scopedOperator, req[0], req[1], `{"role":"agent"}`); code != http.StatusForbidden {
			t.Errorf("scoped operator %s %s: %d, want 403", req[0], req[1], code)
		}
	}
	// The unscoped admin revokes anything.
	if code, _ := e.do(e.admin, "DELETE", "/v1/tokens/"+idOf(otherAdmin), ""); code != http.StatusNoContent {
		t.Fatalf("unscoped admin revoke: %d", code)
	}

	// Mint: join tokens inherit the scope; a wider one is refused.
	tests := []struct {
		desc, tok string
		req       map[string]any
		want      int
		scope     string
	}{
		{"scoped join token, no --scope", scopedAdmin, map[string]any{"role": "agent"}, 201, "payments/"},
		{"scoped join token, narrower", scopedAdmin, map[string]any{"role": "agent", "scope": "payments/eu/*"}, 201, "payments/eu/"},
		{"scoped join token, same", scopedAdmin, map[string]any{"role": "agent", "scope": "payments"}, 201, "payments/"},
		{"scoped join token, other scope", scopedAdmin, map[string]any{"role": "agent", "scope": "other/*"}, 403, ""},
		{"scoped join token, everything", scopedAdmin, map[string]any{"role": "agent", "scope": "*"}, 403, ""},
		{"scoped person token without scope", scopedAdmin, map[string]any{"role": "viewer"}, 403, ""},
		{"scoped person token, narrower", scopedAdmin, map[string]any{"role": "viewer", "scope": "payments/eu"}, 201, "payments/eu/"},
		{"unscoped join token", e.admin, map[string]any{"role": "agent"}, 201, ""},
		{"unscoped admin, scoped join token", e.admin, map[string]any{"role": "agent", "scope": "other/*"}, 201, "other/"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			b, _ := json.Marshal(tt.req)
			code, body := e.do(tt.tok, "POST", "/v1/tokens", string(b))
			if code != tt.want {
				t.Fatalf("status %d, want %d: %s", code, tt.want, body)
			}
			if code != 201 {
				return
			}
			var rec map[string]any
			json.Unmarshal([]byte(body), &rec)
			if s, _ := rec["scope"].(string); s != tt.scope {
				t.Fatalf("scope %q, want %q", s, tt.scope)
			}
		})
	}
}

// TestScopedPrincipalsSeeAndRemoveOnlyAgentsInScope: agents inherit the
// scope of the token that made their join token; agent ls and agent rm of
// a scoped principal reach only agents within its scope.
func TestScopedPrincipalsSeeAndRemoveOnlyAgentsInScope(t *testing.T) {
	e := newEnv(t)
	scopedAdmin := e.token(authz.Admin, "payments/*")
	scopedOperator := e.token(authz.Operator, "payments/*")
	otherAdmin := e.token(authz.Admin, "other/*")
	e.mustEnroll(e.admin, "node-all", map[string]any{})
	e.mustEnroll(scopedAdmin, "node-pay", map[string]any{})
	e.mustEnroll(scopedAdmin, "node-pay-eu", map[string]any{"scope": "payments/eu/*"})
	e.mustEnroll(otherAdmin, "node-other", map[string]any{})

	all := e.agents(e.admin)
	wantScopes := map[string]string{"node-all": "", "node-pay": "payments/", "node-pay-eu": "payments/eu/", "node-other": "other/"}
	if len(all) != len(wantScopes) {
		t.Fatalf("unscoped admin sees %v", all)
	}
	for n, s := range wantScopes {
		if all[n].Scope != s {
			t.Errorf("agent %s: scope %q, want %q", n, all[n].Scope, s)
		}
	}
	for _, tok := range []string{scopedAdmin, scopedOperator} {
		got := e.agents(tok)
		if len(got) != 2 || got["node-pay"].Name == "" || got["node-pay-eu"].Name == "" {
			t.Errorf("scoped principal sees %v, want node-pay and node-pay-eu", got)
		}
	}

	_, missing := e.do(scopedAdmin, "DELETE", "/v1/agents/node-nowhere", "")
	for _, n := range []string{"node-all", "node-other"} {
		code, body := e.do(scopedAdmin, "DELETE", "/v1/agents/"+n, "")
		if code != http.StatusNotFound || strings.ReplaceAll(body, n, "node-nowhere") != missing {
			t.Errorf("scoped admin removing %s: %d %s; want 404 like %s", n, code, body, missing)
		}
	}
	if code, _ := e.do(scopedOperator, "DELETE", "/v1/agents/node-pay", ""); code != http.StatusForbidden {
		t.Errorf("scoped operator removed an agent: %d", code)
	}
	if code, body := e.do(scopedAdmin, "DELETE", "/v1/agents/node-pay", ""); code != http.StatusNoContent {
		t.Fatalf("scoped admin removing its own agent: %d %s", code, body)
	}
	if code, _ := e.do(e.admin, "DELETE", "/v1/agents/node-other", ""); code != http.StatusNoContent {
		t.Fatalf("unscoped admin removing an agent: %d", code)
	}
	left := e.agents(e.admin)
	if len(left) != 2 || left["node-all"].Name == "" || left["node-pay-eu"].Name == "" {
		t.Fatalf("agents left: %v", left)
	}
}

// TestEnrollmentCarriesTheJoinTokensLabelsAndScope: labels and scope go
// from the join token into the fleet record, the certificate, agent ls and
// the audit trail; a labelled join token works once.
func TestEnrollmentCarriesTheJoinTokensLabelsAndScope(t *testing.T) {
	e := newEnv(t)
	scopedAdmin := e.token(authz.Admin, "payments/*")
	join, rec := e.mint(scopedAdmin, map[string]any{"role": "agent", "agent_labels": map[string]string{"zone": "eu-1", "env": "prod"}})
	want := map[string]string{"env": "prod", "zone": "eu-1"}
	if got, _ := rec["agent_labels"].(map[string]any); len(got) != 2 || got["env"] != "prod" {
		t.Fatalf("token record agent_labels = %v", rec["agent_labels"])
	}
	code, cert, body := e.enroll(join, "node-1")
	if code != http.StatusOK {
		t.Fatalf("enroll: %d %s", code, body)
	}
	if got, err := identity.AgentLabels(cert); err != nil || !maps.Equal(got, want) {
		t.Fatalf("certificate labels = %v, %v", got, err)
	}
	for _, tok := range []string{e.admin, scopedAdmin} {
		a := e.agents(tok)["node-1"]
		if !maps.Equal(a.Labels, want) || a.Scope != "payments/" {
			t.Fatalf("agent ls = %+v", a)
		}
	}
	if code, _, body := e.enroll(join, "node-2"); code != http.StatusUnauthorized {
		t.Fatalf("labelled join token used twice: %d %s", code, body)
	}
	var evs []struct {
		Actor   string            `json:"actor"`
		Result  string            `json:"result"`
		Object  string            `json:"object"`
		Details map[string]string `json:"details"`
	}
	e.json(e.admin, "GET", "/v1/audit?action=agent.enroll", nil, &evs)
	ok := false
	for _, ev := range evs {
		if ev.Result == "ok" && ev.Object == "agent:node-1" {
			ok = ev.Details["labels"] == "env=prod,zone=eu-1" && ev.Details["scope"] == "payments/" && ev.Actor == "token:"+rec["id"].(string)
		}
	}
	if !ok {
		t.Fatalf("agent.enroll records: %+v", evs)
	}
	var created []struct {
		Object  string            `json:"object"`
		Details map[string]string `json:"details"`
	}
	e.json(e.admin, "GET", "/v1/audit?action=token.create", nil, &created)
	if len(created) != 1 || created[0].Details["labels"] != "env=prod,zone=eu-1" || created[0].Details["scope"] != "payments/" {
		t.Fatalf("token.create records: %+v", created)
	}
}

func TestAgentLabelsAreValidated(t *testing.T) {
	e := newEnv(t)
	tests := []struct {
		desc, body, inMsg string
	}{
		{"labels on a person's token", `{"role":"viewer","agent_labels":{"env":"prod"}}`, "agent_labels: only a join token (role agent)"},
		{"bad key", `{"role":"agent","agent_labels":{"bad key!":"x"}}`, `label key \"bad key!\"`},
		{"bad value", `{"role":"agent","agent_labels":{"env":"pr od"}}`, `label \"env\"`},
		{"not an object", `{"role":"agent","agent_labels":"env=prod"}`, "agent_labels"},
		{"value not a string", `{"role":"agent","agent_labels":{"env":1}}`, "agent_labels"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			code, body := e.do(e.admin, "POST", "/v1/tokens", tt.body)
			if code != http.StatusBadRequest || !strings.Contains(body, tt.inMsg) {
				t.Fatalf("%d %s; want 400 naming %s", code, body, tt.inMsg)
			}
			if strings.Contains(body, "invalid binding") {
				t.Fatalf("message talks about bindings: %s", body)
			}
		})
	}
	if n := len(e.tokenIDs(e.admin)); n != 1 {
		t.Fatalf("refused requests made tokens: %d", n)
	}
}

// TestEnrollingAnExistingNameIsAConflict: a second enrollment of a name
// is 409 with a message saying what to do, the join token stays usable,
// and the enrolled agent is untouched. (Before the fix it replaced the
// agent's certificates.)
func TestEnrollingAnExistingNameIsAConflict(t *testing.T) {
	e := newEnv(t)
	e.mustEnroll(e.admin, "node-1", map[string]any{})
	before := e.agents(e.admin)["node-1"]
	join, _ := e.mint(e.admin, map[string]any{"role": "agent"})
	code, _, body := e.enroll(join, "node-1")
	if code != http.StatusConflict || !strings.Contains(body, "coffer agent rm node-1") || !strings.Contains(body, "--name") {
		t.Fatalf("second enrollment of node-1: %d %s", code, body)
	}
	if after := e.agents(e.admin)["node-1"]; after.Enrolled != before.Enrolled {
		t.Fatalf("node-1 changed: %+v -> %+v", before, after)
	}
	// A bad token learns nothing about names.
	if code, _, _ := e.enroll("coffer_0123456789abcdef_"+strings.Repeat("A", 43), "node-1"); code != http.StatusUnauthorized {
		t.Fatalf("bad token, taken name: %d, want 401", code)
	}
	// The token was not spent.
	if code, _, body := e.enroll(join, "node-2"); code != http.StatusOK {
		t.Fatalf("the join token was spent by the refused enrollment: %d %s", code, body)
	}
	var evs []struct {
		Result string `json:"result"`
		Object string `json:"object"`
	}
	e.json(e.admin, "GET", "/v1/audit?action=agent.enroll", nil, &evs)
	conflicts := 0
	for _, ev := range evs {
		if ev.Result == "conflict" && ev.Object == "agent:node-1" {
			conflicts++
		}
	}
	if conflicts != 1 {
		t.Fatalf("conflict records: %+v", evs)
	}
}

// TestConcurrentEnrollmentsOfOneNewName: of several enrollments of one new
// name at once, exactly one succeeds; the others get 409 and keep their
// tokens.
func TestConcurrentEnrollmentsOfOneNewName(t *testing.T) {
	e := newEnv(t)
	const n = 6
	joins := make([]string, n)
	for i := range joins {
		joins[i], _ = e.mint(e.admin, map[string]any{"role": "agent"})
	}
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { codes[i], _, _ = e.enroll(joins[i], "node-1") })
	}
	wg.Wait()
	won := 0
	for i, c := range codes {
		switch c {
		case http.StatusOK:
			won++
		case http.StatusConflict:
			if code, _, body := e.enroll(joins[i], fmt.Sprintf("node-x%d", i)); code != http.StatusOK {
				t.Errorf("token of a refused enrollment: %d %s", code, body)
			}
		default:
			t.Errorf("enrollment %d: %d", i, c)
		}
	}
	if won != 1 {
		t.Fatalf("%d enrollments of node-1 succeeded: %v", won, codes)
	}
}
