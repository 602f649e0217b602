// Package console is coffer-server's web console at /ui/: server-rendered
// pages (html/template) and one small static script, all embedded in the
// binary, over the REST API.
//
// The console holds no authority of its own. A person logs in with a
// bearer token (or, where the API takes directory logins, GET /v1/login, a directory
// username and password); the console keeps that token in a server-side
// session table and calls the REST API in-process with it for everything
// it shows or changes. Roles, scopes, validation and the audit trail are
// therefore exactly the API's. What the console adds is the browser's side
// of security:
//
//   - a session cookie holding a random id, never the token (HttpOnly,
//     Secure, SameSite=Strict, Path=/ui/), with an absolute and an idle
//     expiry and never outliving the token;
//   - a CSRF token on every state-changing form and script call, checked
//     before anything reaches the API, and Origin / Sec-Fetch-Site checks;
//   - strict headers on every answer: a CSP without inline script or style,
//     X-Frame-Options DENY, HSTS, Referrer-Policy no-referrer, no-store;
//   - secret values are read from the form into buffers the console
//     zeroes, sent to the API, and never rendered, echoed or logged; the
//     script empties value fields once a form is submitted.
package console

import (
	"crypto/rand"
	"embed"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"
)

//go:embed assets
var assets embed.FS

// Prefix is where the console is served.
const Prefix = "/ui/"

// Config wires the console.
type Config struct {
	// API is the REST API handler (api.New); the console calls it
	// in-process with the session's bearer token.
	API http.Handler
	// MaxValueSize is the server's limit on a secret value (bytes); forms
	// larger than it are refused before they reach the API. Default 1 MiB.
	MaxValueSize int
	// SessionTTL bounds a session's life (default 8h) and SessionIdle the
	// time between two requests (default 30m). A session never outlives
	// its token.
	SessionTTL, SessionIdle time.Duration
	// MaxSessions bounds the session table (default 10000): when it is
	// full, the session closest to its expiry is dropped.
	MaxSessions int
	Logger      *slog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Console is the /ui/ handler.
type Console struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	sessions *sessions
	pages    map[string]*template.Template
	static   http.Handler
	loginKey []byte // HMAC key of the login form's CSRF token

	ldapOnce sync.Once
	ldap     bool // the API takes directory logins (GET /v1/login)
}

// New builds the console.
func New(cfg Config) *Console {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxValueSize <= 0 {
		cfg.MaxValueSize = 1 << 20
	}
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = 8 * time.Hour
	}
	if cfg.SessionIdle <= 0 {
		cfg.SessionIdle = 30 * time.Minute
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = 10000
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	static, err := fs.Sub(assets, "assets/static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	c := &Console{
		cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(),
		sessions: newSessions(cfg.MaxSessions),
		pages:    parsePages(),
		static:   http.StripPrefix(Prefix+"static/", http.FileServerFS(static)),
		loginKey: make([]byte, 32),
	}
	rand.Read(c.loginKey)
	c.routes()
	return c
}

// Mount returns a handler that serves the console at /ui/ and everything
// else with next (the API).
func Mount(next http.Handler, c *Console) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p == "/ui" || strings.HasPrefix(p, Prefix) {
			c.ServeHTTP(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// csp allows the console's own script, style and images and nothing else:
// no inline script or style, no framing, forms only to itself.
const csp = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'"

// ServeHTTP implements http.Handler.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Frame-Options", "DENY")
	h.Set("Strict-Transport-Security", "max-age=63072000")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
	if strings.HasPrefix(r.URL.Path, Prefix+"static/") {
		h.Set("Cache-Control", "no-cache")
		if strings.HasSuffix(r.URL.Path, "/") { // no directory listings
			c.fail(w, r, nil, http.StatusNotFound, "No such page.")
			return
		}
	} else {
		h.Set("Cache-Control", "no-store")
	}
	if r.URL.Path == "/ui" {
		http.Redirect(w, r, Prefix, http.StatusSeeOther)
		return
	}
	c.mux.ServeHTTP(w, r)
}

func (c *Console) routes() {
	m := c.mux
	m.Handle("GET "+Prefix+"static/", c.static)
	m.HandleFunc("GET "+Prefix+"login", c.loginPage)
	m.HandleFunc("POST "+Prefix+"login", c.login)
	m.HandleFunc("POST "+Prefix+"logout", c.post(smallForm, c.logoutPost))

	m.HandleFunc("GET "+Prefix+"{$}", c.authed(func(s *sess, w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"secrets", http.StatusSeeOther)
	}))
	m.HandleFunc("GET "+Prefix+"secrets", c.authed(c.secretsPage))
	m.HandleFunc("GET "+Prefix+"secrets/{name...}", c.authed(c.secretPage))
	m.HandleFunc("GET "+Prefix+"fragment/holders/{name...}", c.authed(c.holdersFragment))
	m.HandleFunc("POST "+Prefix+"secrets/put", c.post(int64(c.cfg.MaxValueSize)+smallForm, c.putSecret, "value", "file"))
	m.HandleFunc("POST "+Prefix+"secrets/delete", c.post(smallForm, c.deleteSecret))
	m.HandleFunc("POST "+Prefix+"secrets/rollback", c.post(smallForm, c.rollbackSecret))
	m.HandleFunc("POST "+Prefix+"secrets/undelete", c.post(smallForm, c.undeleteSecret))

	m.HandleFunc("GET "+Prefix+"bindings", c.authed(c.bindingsPage))
	m.HandleFunc("GET "+Prefix+"bindings/edit", c.authed(c.bindingEditPage))
	m.HandleFunc("POST "+Prefix+"bindings/save", c.post(smallForm, c.saveBinding))
	m.HandleFunc("POST "+Prefix+"bindings/delete", c.post(smallForm, c.deleteBinding))
	m.HandleFunc("POST "+Prefix+"bindings/preview", c.postJSON(c.previewBinding))
	m.HandleFunc("POST "+Prefix+"bindings/evaluate", c.postJSON(c.evaluate))

	m.HandleFunc("GET "+Prefix+"hosts", c.authed(c.hostsPage))
	m.HandleFunc("GET "+Prefix+"fragment/hosts", c.authed(c.hostsFragment))

	m.HandleFunc("GET "+Prefix+"audit", c.authed(c.auditPage))
	m.HandleFunc("GET "+Prefix+"audit/export", c.authed(c.auditExport))
	m.HandleFunc("GET "+Prefix+"audit/verify", c.authed(c.auditVerify))

	m.HandleFunc("GET "+Prefix+"incident", c.authed(c.incidentPage))
	m.HandleFunc("POST "+Prefix+"incident/quarantine", c.post(smallForm, c.quarantinePost))
	m.HandleFunc("POST "+Prefix+"incident/revoke-version", c.post(smallForm, c.revokeVersionPost))
	m.HandleFunc("POST "+Prefix+"incident/revoke-tokens", c.post(smallForm, c.revokeTokensPost))
	m.HandleFunc("POST "+Prefix+"incident/lockdown", c.post(smallForm, c.lockdownPost))
	m.HandleFunc("POST "+Prefix+"incident/lift", c.post(smallForm, c.liftPost))

	m.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, nil, http.StatusNotFound, "No such page.")
	})
}
