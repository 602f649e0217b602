package console_test

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"coffer/internal/authz"
)

// Every answer of the console, pages, errors, redirects and static files,
// carries the strict headers.
func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	s := newStack(t, stackOpts{})
	b := s.browser()
	anon := []string{"/ui/login", "/ui/secrets", "/ui/nope", "/ui/static/app.js", "/ui/static/app.css", "/ui"}
	if p := b.get("/ui/static/"); p.code != http.StatusNotFound || strings.Contains(p.body, ">app.js<") {
		t.Errorf("static directory listing: %d", p.code)
	}
	for _, p := range anon {
		checkHeaders(t, p, b.get(p))
	}
	b.login(s.admin)
	for _, p := range []string{"/ui/secrets", "/ui/bindings", "/ui/bindings/edit", "/ui/hosts", "/ui/audit", "/ui/incident", "/ui/secrets/none", "/ui/nope"} {
		got := b.get(p)
		checkHeaders(t, p, got)
		if strings.Contains(got.body, "<script>") || strings.Contains(got.body, " style=") || strings.Contains(got.body, "<style") {
			t.Errorf("%s: inline script or style in the page", p)
		}
	}
}

func checkHeaders(t *testing.T, path string, p page) {
	t.Helper()
	want := map[string]string{
		"Content-Security-Policy":   "default-src 'self'; script-src 'self'; style-src 'self'",
		"X-Frame-Options":           "DENY",
		"Strict-Transport-Security": "max-age=",
		"Referrer-Policy":           "no-referrer",
		"X-Content-Type-Options":    "nosniff",
	}
	for k, v := range want {
		if got := p.header.Get(k); !strings.Contains(got, v) {
			t.Errorf("%s (%d): %s = %q, want it to contain %q", path, p.code, k, got, v)
		}
	}
	csp := p.header.Get("Content-Security-Policy")
	for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*"} {
		if strings.Contains(csp, bad) {
			t.Errorf("%s: CSP allows %s: %s", path, bad, csp)
		}
	}
	if !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("%s: CSP without frame-ancestors 'none'", path)
	}
	cc := p.header.Get("Cache-Control")
	if strings.HasPrefix(path, "/ui/static/") {
		if cc == "" {
			t.Errorf("%s: no Cache-Control", path)
		}
	} else if cc != "no-store" {
		t.Errorf("%s: Cache-Control %q, want no-store", path, cc)
	}
}

// The session cookie is a random id with the strict attributes; the token
// stays on the server.
func TestSessionCookie(t *testing.T) {
	s := newStack(t, stackOpts{})
	b := s.browser()
	lp := b.get("/ui/login")
	p := b.postForm("/ui/login", url.Values{"csrf": {csrfOf(t, lp)}, "token": {s.admin}})
	if p.code != http.StatusSeeOther {
		t.Fatalf("login: %d\n%s", p.code, p.body)
	}
	var set string
	for _, c := range p.header.Values("Set-Cookie") {
		if strings.HasPrefix(c, "coffer_session=") {
			set = c
		}
	}
	for _, want := range []string{"Path=/ui/", "HttpOnly", "Secure", "SameSite=Strict", "Max-Age="} {
		if !strings.Contains(set, want) {
			t.Errorf("session cookie %q lacks %s", set, want)
		}
	}
	id := b.cookie("coffer_session")
	_, secretPart, _ := strings.Cut(strings.TrimPrefix(s.admin, "coffer_"), "_")
	if id == "" || strings.Contains(id, secretPart) || strings.Contains(s.admin, id) {
		t.Fatalf("cookie %q is empty or carries the token", id)
	}
	if len(id) < 40 {
		t.Errorf("session id %q is too short to be 256 random bits", id)
	}
	// A made-up id is no session.
	other := s.browser()
	other.c.Jar.SetCookies(b.url, []*http.Cookie{{Name: "coffer_session", Value: id[:len(id)-2] + "xx", Path: "/ui/"}})
	if got := other.get("/ui/secrets"); got.code != http.StatusSeeOther || !strings.Contains(got.header.Get("Location"), "/ui/login") {
		t.Errorf("forged session id: %d %s", got.code, got.header.Get("Location"))
	}
	// Without a cookie: the login page, with no talk of an expired session.
	if got := s.browser().get("/ui/secrets"); got.header.Get("Location") != "/ui/login" {
		t.Errorf("no session: %d %s", got.code, got.header.Get("Location"))
	}
	// Each login gets a new id (no fixation).
	b2 := s.browser()
	b2.login(s.admin)
	if b2.cookie("coffer_session") == id {
		t.Error("two logins got the same session id")
	}
}

func TestLoginRefusals(t *testing.T) {
	s := newStack(t, stackOpts{})
	t.Run("wrong token", func(t *testing.T) {
		b := s.browser()
		lp := b.get("/ui/login")
		p := b.postForm("/ui/login", url.Values{"csrf": {csrfOf(t, lp)}, "token": {"coffer_nope_nope"}})
		if p.code != http.StatusUnauthorized || !strings.Contains(p.body, "invalid, expired or revoked") {
			t.Errorf("%d\n%s", p.code, p.body)
		}
		if b.cookie("coffer_session") != "" {
			t.Error("a failed login set a session cookie")
		}
	})
	t.Run("no login CSRF", func(t *testing.T) {
		b := s.browser()
		p := b.postForm("/ui/login", url.Values{"token": {s.admin}})
		if p.code != http.StatusForbidden || b.cookie("coffer_session") != "" {
			t.Errorf("%d\n%s", p.code, p.body)
		}
	})
	t.Run("CSRF of another browser's login form", func(t *testing.T) {
		a, b := s.browser(), s.browser()
		tok := csrfOf(t, a.get("/ui/login"))
		b.get("/ui/login")
		if p := b.postForm("/ui/login", url.Values{"csrf": {tok}, "token": {s.admin}}); p.code != http.StatusForbidden {
			t.Errorf("%d\n%s", p.code, p.body)
		}
	})
	t.Run("cross-site", func(t *testing.T) {
		b := s.browser()
		lp := b.get("/ui/login")
		p := b.postForm("/ui/login", url.Values{"csrf": {csrfOf(t, lp)}, "token": {s.admin}}, "Origin", "https://evil.example")
		if p.code != http.StatusForbidden || b.cookie("coffer_session") != "" {
			t.Errorf("%d\n%s", p.code, p.body)
		}
	})
	t.Run("no LDAP here", func(t *testing.T) {
		b := s.browser()
		lp := b.get("/ui/login")
		if strings.Contains(lp.body, `name="username"`) {
			t.Error("the login page offers a directory login the API does not have")
		}
		p := b.postForm("/ui/login", url.Values{"csrf": {csrfOf(t, lp)}, "username": {"alice"}, "password": {"pw"}})
		if p.code != http.StatusBadRequest || !strings.Contains(p.body, "no directory") {
			t.Errorf("%d\n%s", p.code, p.body)
		}
	})
	if strings.Contains(s.logs.String(), s.admin) {
		t.Error("a token in the logs")
	}
}

// A state-changing form without the session's CSRF token, or from
// another origin, changes nothing.
func TestCSRFRefusedAndNothingChanged(t *testing.T) {
	s := newStack(t, stackOpts{})
	b := s.browser()
	tok := b.login(s.admin)
	other := s.browser()
	otherTok := other.login(s.admin)
	const value = "csrf-test-value-8f3a"
	cases := []struct {
		name   string
		fields map[string]string
		hdr    []string
	}{
		{"missing", map[string]string{"name": "app/x", "source": "value", "value": value}, nil},
		{"empty", map[string]string{"csrf": "", "name": "app/x", "source": "value", "value": value}, nil},
		{"wrong", map[string]string{"csrf": tok + "x", "name": "app/x", "source": "value", "value": value}, nil},
		{"another session's", map[string]string{"csrf": otherTok, "name": "app/x", "source": "value", "value": value}, nil},
	}
	for _, c := range cases {
		p := b.postMultipart("/ui/secrets/put", c.fields, nil)
		if p.code != http.StatusForbidden || !strings.Contains(p.body, "CSRF") || !strings.Contains(p.body, "Nothing was changed") {
			t.Errorf("%s: %d\n%s", c.name, p.code, p.body)
		}
	}
	// Right token, wrong origin.
	p := b.postForm("/ui/secrets/delete", url.Values{"csrf": {tok}, "name": {"app/x"}}, "Origin", "https://evil.example")
	if p.code != http.StatusForbidden {
		t.Errorf("cross-origin: %d", p.code)
	}
	p = b.postForm("/ui/secrets/delete", url.Values{"csrf": {tok}, "name": {"app/x"}}, "Sec-Fetch-Site", "cross-site")
	if p.code != http.StatusForbidden {
		t.Errorf("Sec-Fetch-Site cross-site: %d", p.code)
	}
	// Under Referrer-Policy: no-referrer a browser's own post says
	// "Origin: null": accepted only with Sec-Fetch-Site: same-origin.
	p = b.postForm("/ui/secrets/delete", url.Values{"csrf": {tok}, "name": {"app/x"}}, "Origin", "null")
	if p.code != http.StatusForbidden {
		t.Errorf("Origin null alone: %d", p.code)
	}
	p = b.postForm("/ui/secrets/delete", url.Values{"csrf": {tok}, "name": {"app/x"}}, "Origin", "null", "Sec-Fetch-Site", "same-origin")
	if p.code != http.StatusNotFound { // past the origin check: the API says app/x does not exist
		t.Errorf("Origin null, same-origin fetch: %d\n%s", p.code, p.body)
	}
	// Every POST route checks it.
	for _, route := range []string{"/ui/secrets/delete", "/ui/secrets/rollback", "/ui/secrets/undelete", "/ui/bindings/save", "/ui/bindings/delete", "/ui/logout"} {
		if p := b.postForm(route, url.Values{"name": {"app/x"}, "to": {"1"}}); p.code != http.StatusForbidden {
			t.Errorf("%s without CSRF: %d", route, p.code)
		}
	}
	for _, route := range []string{"/ui/bindings/preview", "/ui/bindings/evaluate"} {
		if p := b.postJSON(route, `{"name":"b","secret":"app/x","selector":"app=web","create":"1"}`, ""); p.code != http.StatusForbidden {
			t.Errorf("%s without CSRF: %d", route, p.code)
		}
	}
	if s.current("app/x") != 0 {
		t.Fatal("a refused form stored the secret")
	}
	// And with the token it works: the refusals were the token's.
	if p := b.postMultipart("/ui/secrets/put", map[string]string{"csrf": tok, "name": "app/x", "source": "value", "value": value}, nil); p.code != http.StatusSeeOther {
		t.Fatalf("put with the token: %d\n%s", p.code, p.body)
	}
	if s.current("app/x") != 1 {
		t.Fatal("put with the token did not store")
	}
	// The logout form is session-bound too: still logged in.
	if got := b.get("/ui/secrets"); got.code != http.StatusOK {
		t.Errorf("after a refused logout: %d", got.code)
	}
	noLeak(t, s, value)
}

// noLeak fails if value is in anything the console sent or logged.
func noLeak(t *testing.T, s *stack, value string) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if bytes.Contains(s.responses.Bytes(), []byte(value)) {
		t.Error("the value is in a console response")
	}
	if strings.Contains(s.logs.String(), value) {
		t.Error("the value is in the logs")
	}
}

func TestExpiredSessions(t *testing.T) {
	t.Run("idle", func(t *testing.T) {
		s := newStack(t, stackOpts{})
		b := s.browser()
		tok := b.login(s.admin)
		s.advance(31 * time.Minute)
		if p := b.get("/ui/secrets"); p.code != http.StatusSeeOther || p.header.Get("Location") != "/ui/login?m=expired" {
			t.Errorf("GET after idle: %d %s", p.code, p.header.Get("Location"))
		}
		p := b.postMultipart("/ui/secrets/put", map[string]string{"csrf": tok, "name": "app/idle", "source": "generate", "length": "10"}, nil)
		if p.code != http.StatusUnauthorized || !strings.Contains(p.body, "nothing was changed") {
			t.Errorf("POST after idle: %d\n%s", p.code, p.body)
		}
		if s.current("app/idle") != 0 {
			t.Error("an expired session stored a secret")
		}
	})
	t.Run("absolute", func(t *testing.T) {
		s := newStack(t, stackOpts{})
		b := s.browser()
		b.login(s.admin)
		for range 17 { // 8h30m in steps shorter than the idle limit
			s.advance(30*time.Minute - time.Second)
			b.get("/ui/incident")
		}
		if p := b.get("/ui/secrets"); p.code != http.StatusSeeOther {
			t.Errorf("after 8h: %d", p.code)
		}
	})
	t.Run("token expiry", func(t *testing.T) {
		s := newStack(t, stackOpts{})
		short := s.token(authz.Operator, "", 20*time.Minute)
		b := s.browser()
		b.login(short)
		s.advance(21 * time.Minute)
		if p := b.get("/ui/secrets"); p.code != http.StatusSeeOther {
			t.Errorf("after the token expired: %d", p.code)
		}
	})
	t.Run("fragment", func(t *testing.T) {
		s := newStack(t, stackOpts{})
		b := s.browser()
		b.login(s.admin)
		s.advance(time.Hour)
		req, _ := http.NewRequest(http.MethodGet, s.srv.URL+"/ui/fragment/hosts", nil)
		req.Header.Set("X-Coffer-Fragment", "1")
		if p := b.do(req); p.code != http.StatusUnauthorized {
			t.Errorf("fragment after expiry: %d (the script needs 401)", p.code)
		}
	})
}

// A token revoked (or expired on the server) while its session is open
// ends the session at the next page.
func TestRevokedTokenEndsSession(t *testing.T) {
	s := newStack(t, stackOpts{})
	op := s.token(authz.Operator, "", 0)
	b := s.browser()
	b.login(op)
	id := strings.SplitN(strings.TrimPrefix(op, "coffer_"), "_", 2)[0]
	if code := s.apiStatus(http.MethodDelete, "/v1/tokens/"+id); code != http.StatusNoContent {
		t.Fatalf("revoke: %d", code)
	}
	if p := b.get("/ui/secrets"); p.code != http.StatusSeeOther || !strings.Contains(p.header.Get("Location"), "login") {
		t.Fatalf("after revocation: %d %s", p.code, p.header.Get("Location"))
	}
	if p := b.get("/ui/bindings"); p.code != http.StatusSeeOther {
		t.Errorf("the session survived: %d", p.code)
	}
}

func TestLogout(t *testing.T) {
	s := newStack(t, stackOpts{})
	b := s.browser()
	tok := b.login(s.admin)
	id := b.cookie("coffer_session")
	p := b.postForm("/ui/logout", url.Values{"csrf": {tok}})
	if p.code != http.StatusSeeOther || p.header.Get("Location") != "/ui/login?m=out" {
		t.Fatalf("logout: %d %s", p.code, p.header.Get("Location"))
	}
	// The old id is dead even if a copy was kept.
	c := s.browser()
	c.c.Jar.SetCookies(c.url, []*http.Cookie{{Name: "coffer_session", Value: id, Path: "/ui/"}})
	if p := c.get("/ui/secrets"); p.code != http.StatusSeeOther {
		t.Errorf("a logged-out session id still works: %d", p.code)
	}
}

func TestSessionTableIsBounded(t *testing.T) {
	s := newStack(t, stackOpts{maxSessions: 2})
	a, b, c := s.browser(), s.browser(), s.browser()
	a.login(s.admin)
	b.login(s.admin)
	c.login(s.admin)
	alive := 0
	for _, x := range []*browser{a, b, c} {
		if x.get("/ui/incident").code == http.StatusOK {
			alive++
		}
	}
	if alive != 2 {
		t.Errorf("%d sessions alive, want 2", alive)
	}
}
