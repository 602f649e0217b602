package console_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"mime/multipart"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/api"
	"coffer/internal/audit"
	"coffer/internal/authn"
	"coffer/internal/authz"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/console"
	"coffer/internal/fleet"
	"coffer/internal/identity"
	"coffer/internal/incident"
	"coffer/internal/seal"
	"coffer/internal/store/bolt"
	"coffer/test/testkit"
)

// stack is the API on real parts (bbolt, seal, audit file) with the
// console in front, served over TLS on 127.0.0.1.
type stack struct {
	t      *testing.T
	srv    *httptest.Server
	api    http.Handler
	tokens *authn.Tokens
	cat    *catalog.Catalog
	fleet  *fleet.Fleet
	admin  string
	logs   *testkit.Buffer
	ui     *console.Console

	mu        sync.Mutex
	now       time.Time
	responses bytes.Buffer // every body the console sent, for leak checks
}

type stackOpts struct {
	maxValue    int
	maxSessions int
	wrap        func(api http.Handler, tokens *authn.Tokens) http.Handler // replaces the API (LDAP tests)
	login       *api.Login                                                // directory logins (real slapd tests)
}

func newStack(t *testing.T, o stackOpts) *stack {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	logs := &testkit.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := bolt.Open(filepath.Join(dir, "coffer.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := seal.CreateKeyFile(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, _, err := identity.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	alog, err := audit.Open(filepath.Join(dir, "audit.log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alog.Close() })
	tokens, err := authn.NewTokens(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := fleet.Open(ctx, fleet.Config{Store: st, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	if o.maxValue == 0 {
		o.maxValue = 1 << 20
	}
	var b *broker.Broker
	cat, err := catalog.Open(ctx, catalog.Config{Store: st, Key: key, Logger: log, MaxValueSize: o.maxValue, OnChange: func(c catalog.Change) { b.Changed(c) }})
	if err != nil {
		t.Fatal(err)
	}
	inc, err := incident.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	b = broker.New(broker.Config{Catalog: cat, Audit: alog, Agents: fl, Logger: log})
	var h http.Handler = api.New(api.Config{Catalog: cat, Tokens: tokens, Fleet: fl, Broker: b, Audit: alog, Incident: inc, Login: o.login, CAPEM: ca.CertPEM, Logger: log, MaxValueSize: o.maxValue})
	if o.wrap != nil {
		h = o.wrap(h, tokens)
	}
	s := &stack{t: t, api: h, tokens: tokens, cat: cat, fleet: fl, logs: logs, now: time.Now()}
	s.ui = console.New(console.Config{API: h, MaxValueSize: o.maxValue, Logger: log, MaxSessions: o.maxSessions, Now: s.clock})
	mounted := console.Mount(h, s.ui)
	s.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, console.Prefix) {
			rec := &teeWriter{ResponseWriter: w, s: s}
			mounted.ServeHTTP(rec, r)
			return
		}
		mounted.ServeHTTP(w, r)
	}))
	t.Cleanup(s.srv.Close)
	s.admin = s.token(authz.Admin, "", 0)
	return s
}

type teeWriter struct {
	http.ResponseWriter
	s *stack
}

func (w *teeWriter) Write(p []byte) (int, error) {
	w.s.mu.Lock()
	w.s.responses.Write(p)
	w.s.mu.Unlock()
	return w.ResponseWriter.Write(p)
}

func (s *stack) clock() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.now
}

// advance moves the console's clock (not the API's).
func (s *stack) advance(d time.Duration) {
	s.mu.Lock()
	s.now = s.now.Add(d)
	s.mu.Unlock()
}

func (s *stack) token(role authz.Role, scope string, ttl time.Duration) string {
	s.t.Helper()
	plain, _, err := s.tokens.Create(context.Background(), authn.CreateOptions{Role: role, Scope: authz.NormalizeScope(scope), TTL: ttl, CreatedBy: "test"})
	if err != nil {
		s.t.Fatal(err)
	}
	return plain
}

// apiStatus asks the API itself (as admin) for path and returns the status.
func (s *stack) apiStatus(method, path string) int {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+s.admin)
	resp, err := s.srv.Client().Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// current is the current version of a secret (0: none).
func (s *stack) current(name string) uint64 {
	v, err := s.cat.Current(context.Background(), name)
	if err != nil {
		return 0
	}
	return v
}

// browser is a cookie-keeping client that does not follow redirects.
type browser struct {
	t   *testing.T
	s   *stack
	c   *http.Client
	url *url.URL
}

func (s *stack) browser() *browser {
	jar, _ := cookiejar.New(nil)
	c := *s.srv.Client()
	c.Jar = jar
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	u, _ := url.Parse(s.srv.URL)
	return &browser{t: s.t, s: s, c: &c, url: u}
}

type page struct {
	code   int
	header http.Header
	body   string
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.c.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return page{code: resp.StatusCode, header: resp.Header, body: string(body)}
}

func (b *browser) get(path string) page {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, b.s.srv.URL+path, nil)
	return b.do(req)
}

// postForm posts urlencoded fields; with origin, an Origin header.
func (b *browser) postForm(path string, v url.Values, hdr ...string) page {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.s.srv.URL+path, strings.NewReader(v.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return b.do(req)
}

// postMultipart posts fields and (name → content) files as multipart.
func (b *browser) postMultipart(path string, fields map[string]string, files map[string][]byte) page {
	b.t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for k, v := range fields {
		mw.WriteField(k, v)
	}
	for k, v := range files {
		fw, _ := mw.CreateFormFile(k, "upload.bin")
		fw.Write(v)
	}
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, b.s.srv.URL+path, &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return b.do(req)
}

func (b *browser) postJSON(path, body, csrf string) page {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.s.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if csrf != "" {
		req.Header.Set("X-CSRF-Token", csrf)
	}
	return b.do(req)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the CSRF token from a page's forms.
func csrfOf(t *testing.T, p page) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("no CSRF field in the page (%d):\n%s", p.code, p.body)
	}
	return m[1]
}

// login logs in with token and returns the session's CSRF token.
func (b *browser) login(token string) string {
	b.t.Helper()
	lp := b.get("/ui/login")
	p := b.postForm("/ui/login", url.Values{"csrf": {csrfOf(b.t, lp)}, "token": {token}})
	if p.code != http.StatusSeeOther || p.header.Get("Location") != "/ui/secrets" {
		b.t.Fatalf("login: %d %s\n%s", p.code, p.header.Get("Location"), p.body)
	}
	return csrfOf(b.t, b.get("/ui/secrets"))
}

// cookie returns the browser's cookie of that name, or "".
func (b *browser) cookie(name string) string {
	for _, c := range b.c.Jar.Cookies(&url.URL{Scheme: "https", Host: b.url.Host, Path: "/ui/"}) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}
