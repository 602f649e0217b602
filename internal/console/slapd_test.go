package console_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"coffer/internal/api"
	cldap "coffer/internal/directory/ldap"
	"coffer/internal/directory/ldap/ldaptest"
)

// The login form's username and password go to POST /v1/login, here
// against a real slapd (skipped without it, mandatory under
// COFFER_REQUIRE_TOOLS=1): a directory user gets a session with the
// grants of their groups, a wrong password none, and logout revokes the
// session's token.
func TestSlapdLogin(t *testing.T) {
	srv := ldaptest.Start(t)
	d, err := cldap.New(srv.Config(), nil)
	if err != nil {
		t.Fatal(err)
	}
	vc := d.Config()
	s := newStack(t, stackOpts{login: &api.Login{Directory: d, Groups: vc.Mapping(), TTL: vc.SessionTTL, Source: "ldap"}})

	b := s.browser()
	lp := b.get("/ui/login")
	if !strings.Contains(lp.body, `id="ldap-login"`) {
		t.Fatalf("no directory login form:\n%s", lp.body)
	}
	p := b.postForm("/ui/login", url.Values{"csrf": {csrfOf(t, lp)}, "username": {"carol"}, "password": {"not-carols-pw-51"}})
	if p.code != http.StatusUnauthorized || b.cookie("coffer_session") != "" {
		t.Fatalf("wrong password: %d\n%s", p.code, p.body)
	}
	lp = b.get("/ui/login")
	p = b.postForm("/ui/login", url.Values{"csrf": {csrfOf(t, lp)}, "username": {"carol"}, "password": {ldaptest.Password("carol")}})
	if p.code != http.StatusSeeOther {
		t.Fatalf("login: %d\n%s", p.code, p.body)
	}
	page := b.get("/ui/secrets")
	mustContain(t, "carol's session", page, http.StatusOK, `<span id="principal">ldap:carol</span>`, "operator", "scope payments/")
	// An operator gets no incident forms.
	inc := b.get("/ui/incident")
	for _, f := range incidentForms {
		if strings.Contains(inc.body, f) {
			t.Errorf("an operator's incident page has %s", f)
		}
	}
	if p := b.postForm("/ui/logout", url.Values{"csrf": {csrfOf(t, page)}}); p.code != http.StatusSeeOther {
		t.Fatalf("logout: %d", p.code)
	}
	for _, tk := range s.tokens.List() {
		if tk.Principal().ID == "ldap:carol" {
			t.Errorf("carol's session token %s survived logout", tk.ID)
		}
	}

	// root (coffer-admins) gets the admin's incident page.
	r := s.browser()
	lp = r.get("/ui/login")
	if p := r.postForm("/ui/login", url.Values{"csrf": {csrfOf(t, lp)}, "username": {"root"}, "password": {ldaptest.Password("root")}}); p.code != http.StatusSeeOther {
		t.Fatalf("root login: %d\n%s", p.code, p.body)
	}
	mustContain(t, "root's incident page", r.get("/ui/incident"), http.StatusOK, `action="/ui/incident/quarantine"`, `action="/ui/incident/lockdown"`)

	for _, pw := range []string{"not-carols-pw-51", ldaptest.Password("carol"), ldaptest.Password("root")} {
		if strings.Contains(s.logs.String(), pw) || strings.Contains(s.responses.String(), pw) {
			t.Errorf("a password leaked")
		}
	}
}
