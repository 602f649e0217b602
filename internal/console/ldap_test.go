package console_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/authn"
	"coffer/internal/authz"
)

// fakeLogin stands in for the directory login another part of the server
// adds: POST /v1/login {"username","password"} → {"token"}, POST
// /v1/logout revokes the caller's token, and GET /v1/login says directory
// logins are on. Everything else goes to the real API.
type fakeLogin struct {
	next    http.Handler
	tokens  *authn.Tokens
	mu      sync.Mutex
	logouts int
	bodies  []string
}

func (f *fakeLogin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/v1/login":
		if r.Method == http.MethodGet {
			io.WriteString(w, `{"directory": true}`)
			return
		}
		var req struct{ Username, Password string }
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.bodies = append(f.bodies, string(b))
		f.mu.Unlock()
		if err := json.Unmarshal(b, &req); err != nil || req.Username != "alice" || req.Password != `pa"ss\wörd<1>` {
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"error":"invalid username or password"}`)
			return
		}
		plain, _, err := f.tokens.Create(r.Context(), authn.CreateOptions{Role: authz.Operator, Scope: "payments/", TTL: 8 * time.Hour, Description: "ldap:alice"})
		if err != nil {
			w.WriteHeader(500)
			return
		}
		json.NewEncoder(w).Encode(map[string]string{"token": plain})
	case "/v1/logout":
		tok, err := f.tokens.Authenticate(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if err != nil {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		f.tokens.Revoke(context.Background(), tok.ID)
		f.mu.Lock()
		f.logouts++
		f.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		f.next.ServeHTTP(w, r)
	}
}

func TestDirectoryLoginWhenTheAPIOffersIt(t *testing.T) {
	var fl *fakeLogin
	s := newStack(t, stackOpts{wrap: func(h http.Handler, tokens *authn.Tokens) http.Handler {
		fl = &fakeLogin{next: h, tokens: tokens}
		return fl
	}})
	b := s.browser()
	lp := b.get("/ui/login")
	if !strings.Contains(lp.body, `id="ldap-login"`) || !strings.Contains(lp.body, `name="password"`) {
		t.Fatalf("no directory login form:\n%s", lp.body)
	}
	p := b.postForm("/ui/login", url.Values{"csrf": {csrfOf(t, lp)}, "username": {"alice"}, "password": {"wrong-pw-77"}})
	if p.code != http.StatusUnauthorized || !strings.Contains(p.body, "invalid username or password") || b.cookie("coffer_session") != "" {
		t.Fatalf("wrong password: %d\n%s", p.code, p.body)
	}
	lp = b.get("/ui/login")
	p = b.postForm("/ui/login", url.Values{"csrf": {csrfOf(t, lp)}, "username": {"alice"}, "password": {`pa"ss\wörd<1>`}})
	if p.code != http.StatusSeeOther {
		t.Fatalf("login: %d\n%s", p.code, p.body)
	}
	page := b.get("/ui/secrets")
	if !strings.Contains(page.body, "scope payments/") {
		t.Errorf("the session is not the directory user's:\n%s", page.body)
	}
	if p := b.postForm("/ui/logout", url.Values{"csrf": {csrfOf(t, page)}}); p.code != http.StatusSeeOther {
		t.Fatalf("logout: %d", p.code)
	}
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.logouts != 1 {
		t.Errorf("%d calls to POST /v1/logout, want 1 (the session token is revoked)", fl.logouts)
	}
	for _, pw := range []string{"wrong-pw-77", "ss\\\\w"} {
		if strings.Contains(s.logs.String(), pw) || strings.Contains(s.responses.String(), pw) {
			t.Errorf("password %q leaked", pw)
		}
	}
}
