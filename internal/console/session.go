package console

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"coffer/internal/api"
)

// cookieName is the session cookie; loginCookie carries the login form's
// pre-session CSRF nonce.
const (
	cookieName  = "coffer_session"
	loginCookie = "coffer_login"
)

// sess is one logged-in browser. The cookie holds a random id; the table
// is keyed by its SHA-256, so that neither the table nor a timing side
// channel on the map gives the id back.
type sess struct {
	key     [32]byte
	token   string // the bearer token the console calls the API with
	csrf    string // the session's CSRF token, in every form
	who     api.WhoamiResponse
	viaLDAP bool // the token came from POST /v1/login: revoke it at logout
	created time.Time
	expires time.Time // absolute: min(created+TTL, token expiry)

	mu    sync.Mutex
	seen  time.Time // last request, for the idle limit
	flash string    // one message for the next page
}

// can reports whether the session's role grants action (within its scope).
func (s *sess) can(action string) bool {
	for _, a := range s.who.Actions {
		if string(a) == action {
			return true
		}
	}
	return false
}

func (s *sess) setFlash(msg string) {
	s.mu.Lock()
	s.flash = msg
	s.mu.Unlock()
}

func (s *sess) takeFlash() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.flash
	s.flash = ""
	return m
}

// sessions is the bounded session table.
type sessions struct {
	mu    sync.Mutex
	max   int
	m     map[[32]byte]*sess
	swept time.Time // last sweep of expired sessions
}

func newSessions(max int) *sessions { return &sessions{max: max, m: map[[32]byte]*sess{}} }

func randomString() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// add stores s under a new random id and returns the id (the cookie's
// value). Sessions past their absolute expiry are dropped (at most once a
// minute, and whenever the table is full), so that their tokens do not
// stay in memory; if the table is still full, the session closest to its
// expiry goes.
func (t *sessions) add(s *sess, now time.Time) string {
	id := randomString()
	s.key = sha256.Sum256([]byte(id))
	s.csrf = randomString()
	t.mu.Lock()
	defer t.mu.Unlock()
	if now.Sub(t.swept) >= time.Minute && len(t.m) < t.max {
		t.swept = now
		for k, o := range t.m {
			if o.dead(now, 0) {
				delete(t.m, k)
			}
		}
	}
	if len(t.m) >= t.max {
		var oldest *sess
		for k, o := range t.m {
			if o.dead(now, 0) {
				delete(t.m, k)
				continue
			}
			if oldest == nil || o.expires.Before(oldest.expires) {
				oldest = o
			}
		}
		if len(t.m) >= t.max && oldest != nil {
			delete(t.m, oldest.key)
		}
	}
	t.m[s.key] = s
	return id
}

// dead reports whether s has expired at now, absolutely or (idle > 0)
// for lack of use.
func (s *sess) dead(now time.Time, idle time.Duration) bool {
	if !now.Before(s.expires) {
		return true
	}
	if idle <= 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return now.Sub(s.seen) >= idle
}

// sessionState says whether get found a live session.
type sessionState int

const (
	sessionOK sessionState = iota
	sessionNone
	sessionExpired
)

// get finds the session of id, alive at now; it drops one that expired.
func (t *sessions) get(id string, now time.Time, idle time.Duration) (*sess, sessionState) {
	if id == "" {
		return nil, sessionNone
	}
	k := sha256.Sum256([]byte(id))
	t.mu.Lock()
	s := t.m[k]
	t.mu.Unlock()
	if s == nil {
		return nil, sessionNone
	}
	if s.dead(now, idle) {
		t.remove(s)
		return nil, sessionExpired
	}
	s.mu.Lock()
	s.seen = now
	s.mu.Unlock()
	return s, sessionOK
}

func (t *sessions) remove(s *sess) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m[s.key] == s {
		delete(t.m, s.key)
	}
}

// sessionCookie is the cookie of a new session id (maxAge > 0) or the
// one that clears it (maxAge < 0).
func sessionCookie(name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{
		Name: name, Value: value, Path: Prefix, MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteStrictMode,
	}
}

// loginToken is the login form's CSRF token for the nonce in its cookie.
func (c *Console) loginToken(nonce string) string {
	m := hmac.New(sha256.New, c.loginKey)
	m.Write([]byte(nonce))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// equal compares two tokens in constant time; empty never matches.
func equal(a, b string) bool {
	return a != "" && b != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// CSRF is the session's CSRF token, for templates.
func (s *sess) CSRF() string { return s.csrf }

// Who is the session's principal, for templates.
func (s *sess) Who() api.WhoamiResponse { return s.who }

// Expires is when the session ends at the latest.
func (s *sess) Expires() time.Time { return s.expires }
