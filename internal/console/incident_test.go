package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"coffer/internal/api"
	"coffer/internal/authz"
	"coffer/internal/fleet"
	"coffer/internal/identity"
)

// incidentForms are the markers of the incident page's write forms.
var incidentForms = []string{`action="/ui/incident/quarantine"`, `action="/ui/incident/revoke-version"`,
	`action="/ui/incident/revoke-tokens"`, `action="/ui/incident/lockdown"`, `action="/ui/incident/lift"`}

// enroll records an agent in the fleet (no stream: it is disconnected).
func (s *stack) enroll(name string) {
	s.t.Helper()
	k, err := identity.NewAgentKey()
	if err != nil {
		s.t.Fatal(err)
	}
	csr, err := identity.NewCSR(k, name)
	if err != nil {
		s.t.Fatal(err)
	}
	if _, err := s.fleet.Enroll(context.Background(), name, csr, "", func(context.Context) (fleet.Admission, error) { return fleet.Admission{}, nil }); err != nil {
		s.t.Fatal(err)
	}
}

func (s *stack) enrolled(name string) bool {
	return slices.ContainsFunc(s.fleet.List(), func(a fleet.Agent) bool { return a.Name == name })
}

func (s *stack) tokenAlive(plain string) bool {
	id := strings.SplitN(strings.TrimPrefix(plain, "coffer_"), "_", 2)[0]
	for _, t := range s.tokens.List() {
		if t.ID == id {
			return true
		}
	}
	return false
}

func (s *stack) lockedDown() bool {
	s.t.Helper()
	var st api.LockdownStatus
	if err := json.Unmarshal([]byte(s.apiBody(http.MethodGet, "/v1/incident/lockdown")), &st); err != nil {
		s.t.Fatal(err)
	}
	return st.Lockdown != nil
}

func (s *stack) apiBody(method, path string) string {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+s.admin)
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return string(b)
}

func mustContain(t *testing.T, what string, p page, code int, parts ...string) {
	t.Helper()
	if p.code != code {
		t.Fatalf("%s: %d, want %d\n%s", what, p.code, code, p.body)
	}
	for _, s := range parts {
		if !strings.Contains(p.body, s) {
			t.Errorf("%s: the page lacks %q\n%s", what, s, p.body)
		}
	}
}

// An admin drives every incident action from the page against the real
// in-process API, sees what the API reported, and no value appears.
func TestIncidentActionsAsAdmin(t *testing.T) {
	s := newStack(t, stackOpts{})
	s.enroll("node-7")
	b := s.browser()
	tok := b.login(s.admin)
	put(t, b, tok, "app/leak", "incident-leaked-value-1")
	put(t, b, tok, "app/leak", "incident-leaked-value-2")

	p := b.get("/ui/incident")
	mustContain(t, "page", p, http.StatusOK, append(slices.Clone(incidentForms[:4]), `<option value="node-7">`, "No lockdown is in force")...)

	t.Run("reason required", func(t *testing.T) {
		p := b.postForm("/ui/incident/quarantine", url.Values{"csrf": {tok}, "agent": {"node-7"}, "wait": {"0s"}})
		mustContain(t, "quarantine without reason", p, http.StatusBadRequest, `&#34;reason&#34; is required`, "Nothing was changed")
		if !s.enrolled("node-7") {
			t.Fatal("a quarantine without a reason removed the agent")
		}
		p = b.postForm("/ui/incident/lockdown", url.Values{"csrf": {tok}})
		mustContain(t, "lockdown without reason", p, http.StatusBadRequest, "is required")
		if s.lockedDown() {
			t.Fatal("a lockdown without a reason was declared")
		}
	})

	t.Run("quarantine", func(t *testing.T) {
		p := b.postForm("/ui/incident/quarantine", url.Values{"csrf": {tok}, "agent": {"node-7"}, "wait": {"0s"}, "reason": {"host compromised"}})
		mustContain(t, "quarantine", p, http.StatusOK, `id="quarantine-result"`, "Host node-7 quarantined", "was not connected", "certificate is revoked", "No container of the host held a secret")
		if s.enrolled("node-7") {
			t.Error("node-7 is still enrolled")
		}
		p = b.postForm("/ui/incident/quarantine", url.Values{"csrf": {tok}, "agent": {"node-7"}, "wait": {"0s"}, "reason": {"again"}})
		mustContain(t, "quarantine again", p, http.StatusNotFound, "Nothing was changed")
	})

	t.Run("revoke version", func(t *testing.T) {
		p := b.postForm("/ui/incident/revoke-version", url.Values{"csrf": {tok}, "secret": {"app/leak"}, "version": {"1"}, "reason": {"pasted in chat"}})
		mustContain(t, "revoke v1", p, http.StatusOK, `id="revoke-version-result"`, "app/leak v1 revoked", "not the current version")
		p = b.postForm("/ui/incident/revoke-version", url.Values{"csrf": {tok}, "secret": {"app/leak"}, "version": {"2"}, "reason": {"leaked"},
			"replace": {"on"}, "length": {"24"}, "alphabet": {"hex"}})
		mustContain(t, "revoke v2", p, http.StatusOK, "app/leak v2 revoked", "It was the current version", "generated as v3")
		if got := s.current("app/leak"); got != 3 {
			t.Errorf("app/leak is at v%d, want v3 (the replacement)", got)
		}
		p = b.postForm("/ui/incident/revoke-version", url.Values{"csrf": {tok}, "secret": {"app/leak"}, "version": {"x"}, "reason": {"r"}})
		mustContain(t, "bad version", p, http.StatusBadRequest, "version")
	})

	t.Run("revoke tokens", func(t *testing.T) {
		op1, op2 := s.token(authz.Operator, "payments/", 0), s.token(authz.Operator, "payments/", 0)
		other := s.token(authz.Operator, "web/", 0)
		p := b.postForm("/ui/incident/revoke-tokens", url.Values{"csrf": {tok}, "reason": {"no filter"}})
		mustContain(t, "no filter", p, http.StatusBadRequest, "at least one")
		p = b.postForm("/ui/incident/revoke-tokens", url.Values{"csrf": {tok}, "scope": {"payments/"}, "role": {"operator"}, "reason": {"payments leak"}})
		id1 := strings.SplitN(strings.TrimPrefix(op1, "coffer_"), "_", 2)[0]
		id2 := strings.SplitN(strings.TrimPrefix(op2, "coffer_"), "_", 2)[0]
		mustContain(t, "revoke tokens", p, http.StatusOK, "2 token(s) revoked", "<code>"+id1+"</code>", "<code>"+id2+"</code>")
		if s.tokenAlive(op1) || s.tokenAlive(op2) || !s.tokenAlive(other) {
			t.Error("the wrong tokens were revoked")
		}
		for _, tk := range []string{op1, op2, other} {
			if strings.Contains(p.body, tk) {
				t.Error("a token's secret is in the page")
			}
		}
	})

	t.Run("lockdown", func(t *testing.T) {
		op := s.browser()
		otok := op.login(s.token(authz.Operator, "", 0))
		p := b.postForm("/ui/incident/lockdown", url.Values{"csrf": {tok}, "reason": {"investigating"}, "freeze": {"on"}})
		mustContain(t, "declare", p, http.StatusOK, "Lockdown declared, deliveries frozen", "Lockdown in force since", "investigating", "deliveries are frozen", `action="/ui/incident/lift"`)
		if strings.Contains(p.body, `action="/ui/incident/lockdown"`) {
			t.Error("the declare form is shown during a lockdown")
		}
		if !s.lockedDown() {
			t.Fatal("no lockdown on the server")
		}
		w := op.postMultipart("/ui/secrets/put", map[string]string{"csrf": otok, "name": "app/during", "source": "value", "value": "incident-lockdown-value"}, nil)
		mustContain(t, "operator write in lockdown", w, http.StatusForbidden, "lockdown")
		if s.current("app/during") != 0 {
			t.Error("an operator wrote during a lockdown")
		}
		p = b.postForm("/ui/incident/lift", url.Values{"csrf": {tok}})
		mustContain(t, "lift", p, http.StatusOK, "Lockdown lifted", "No lockdown is in force", `action="/ui/incident/lockdown"`)
		if s.lockedDown() {
			t.Error("the lockdown is still in force")
		}
		p = b.postForm("/ui/incident/lift", url.Values{"csrf": {tok}})
		mustContain(t, "lift again", p, http.StatusConflict, "no lockdown is in force", "Nothing was changed")
	})

	t.Run("report", func(t *testing.T) {
		p := b.get("/ui/incident?secret=app/leak")
		mustContain(t, "report", p, http.StatusOK, `id="report"`, "The audit chain verified", `id="report-changes"`, "secret.put", "pasted in chat",
			`id="report-writers"`, "token:", "No host received it.", "Holdings")
		p = b.get("/ui/incident?secret=app/leak&since=yesterday")
		mustContain(t, "bad since", p, http.StatusBadRequest, "since", "RFC 3339")
	})

	noLeak(t, s, "incident-leaked-value-1")
	noLeak(t, s, "incident-leaked-value-2")
	noLeak(t, s, "incident-lockdown-value")
}

// A viewer's incident page has no write form and no report; its posts are
// refused by the API (403) and change nothing.
func TestIncidentViewerRefused(t *testing.T) {
	s := newStack(t, stackOpts{})
	s.enroll("node-8")
	victim := s.token(authz.Operator, "", 0)
	v := s.browser()
	tok := v.login(s.token(authz.Viewer, "", 0))
	p := v.get("/ui/incident")
	mustContain(t, "viewer page", p, http.StatusOK, `id="incident"`)
	for _, f := range append(slices.Clone(incidentForms), `id="report-form"`) {
		if strings.Contains(p.body, f) {
			t.Errorf("a viewer's incident page has %s", f)
		}
	}
	posts := []struct {
		path   string
		fields url.Values
	}{
		{"/ui/incident/quarantine", url.Values{"agent": {"node-8"}, "wait": {"0s"}, "reason": {"r"}}},
		{"/ui/incident/revoke-tokens", url.Values{"role": {"operator"}, "reason": {"r"}}},
		{"/ui/incident/lockdown", url.Values{"reason": {"r"}}},
		{"/ui/incident/lift", url.Values{}},
	}
	for _, c := range posts {
		c.fields.Set("csrf", tok)
		p := v.postForm(c.path, c.fields)
		mustContain(t, "viewer "+c.path, p, http.StatusForbidden, "Permission denied", "Nothing was changed")
	}
	if !s.enrolled("node-8") || !s.tokenAlive(victim) || s.lockedDown() {
		t.Error("a viewer's post changed something")
	}
	if p := v.get("/ui/incident?secret=app/x"); strings.Contains(p.body, `id="report"`) {
		t.Error("a viewer got a chain-of-custody report")
	}
}

// Posts without (or with a wrong) CSRF token are refused before the API
// sees them.
func TestIncidentNeedsCSRF(t *testing.T) {
	s := newStack(t, stackOpts{})
	s.enroll("node-9")
	b := s.browser()
	tok := b.login(s.admin)
	put(t, b, tok, "app/csrf", "incident-csrf-value")
	victim := s.token(authz.Operator, "", 0)
	posts := []struct {
		path   string
		fields url.Values
	}{
		{"/ui/incident/quarantine", url.Values{"agent": {"node-9"}, "wait": {"0s"}, "reason": {"r"}}},
		{"/ui/incident/revoke-version", url.Values{"secret": {"app/csrf"}, "version": {"1"}, "reason": {"r"}, "replace": {"on"}, "length": {"8"}}},
		{"/ui/incident/revoke-tokens", url.Values{"role": {"operator"}, "reason": {"r"}}},
		{"/ui/incident/lockdown", url.Values{"reason": {"r"}}},
	}
	for _, c := range posts {
		for _, csrf := range []string{"", "wrong"} {
			f := url.Values{}
			for k, v := range c.fields {
				f[k] = v
			}
			if csrf != "" {
				f.Set("csrf", csrf)
			}
			p := b.postForm(c.path, f)
			mustContain(t, c.path+" csrf="+csrf, p, http.StatusForbidden, "CSRF", "Nothing was changed")
		}
	}
	if !s.enrolled("node-9") || !s.tokenAlive(victim) || s.lockedDown() || s.current("app/csrf") != 1 {
		t.Error("a post without a CSRF token changed something")
	}
	noLeak(t, s, "incident-csrf-value")
}
