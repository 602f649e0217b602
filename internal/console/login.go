package console

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"

	"coffer/internal/api"
)

// loginMessages are the messages the login page shows, by key: the page
// never reflects text from its URL.
var loginMessages = map[string]string{
	"expired": "Your session expired or ended. Log in again.",
	"out":     "You have logged out.",
}

type loginView struct {
	CSRF    string
	LDAP    bool
	Message string
}

// optional finds once whether the API takes directory logins (GET
// /v1/login). An API that does not answer it (an older server) has none.
func (c *Console) optional(r *http.Request) {
	c.ldapOnce.Do(func() {
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "/v1/login", http.NoBody)
		if err != nil {
			return
		}
		rec := &recorder{h: http.Header{}}
		c.cfg.API.ServeHTTP(rec, req)
		var m struct {
			Directory bool `json:"directory"`
		}
		if rec.code == http.StatusOK && json.Unmarshal(rec.body.Bytes(), &m) == nil {
			c.ldap = m.Directory
		}
	})
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	if ck, err := r.Cookie(cookieName); err == nil {
		if _, state := c.sessions.get(ck.Value, c.cfg.Now(), c.cfg.SessionIdle); state == sessionOK {
			http.Redirect(w, r, Prefix+"secrets", http.StatusSeeOther)
			return
		}
	}
	c.optional(r)
	nonce := randomString()
	http.SetCookie(w, sessionCookie(loginCookie, nonce, 600))
	c.render(w, nil, http.StatusOK, "login", "Log in", loginView{
		CSRF: c.loginToken(nonce), LDAP: c.ldap, Message: loginMessages[r.URL.Query().Get("m")],
	})
}

// loginFail answers a failed login: the reason, and nothing else (never
// the token or the password).
func (c *Console) loginFail(w http.ResponseWriter, r *http.Request, code int, msg string) {
	c.render(w, nil, code, "error", "Login failed", errorPage{Status: code, Msg: msg, Back: Prefix + "login"})
}

// login starts a session from a token, or from a username and password
// through POST /v1/login when the API offers it.
func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	if !sameOrigin(r) {
		c.loginFail(w, r, http.StatusForbidden, "Cross-site login refused.")
		return
	}
	f, err := readForm(r, smallForm, "password", "token")
	if err != nil {
		c.formError(w, r, nil, err)
		return
	}
	defer f.zero()
	ck, err := r.Cookie(loginCookie)
	if err != nil || !equal(f.get("csrf"), c.loginToken(ck.Value)) {
		c.loginFail(w, r, http.StatusForbidden, "The login form's security (CSRF) token is missing, wrong or older than 10 minutes: reload the login page and try again.")
		return
	}
	c.optional(r)
	var token string
	viaLDAP := false
	switch {
	case len(f.bytes("token")) > 0:
		token = strings.TrimSpace(f.get("token"))
	case f.get("username") != "" && c.ldap:
		token, err = c.ldapLogin(r, f)
		if err != nil {
			var ae *apiError
			if errors.As(err, &ae) {
				c.loginFail(w, r, ae.Status, "Login refused: "+ae.Msg+".")
				return
			}
			c.log.Error("console: login", "err", err)
			c.loginFail(w, r, http.StatusBadGateway, "The login service gave no token; see the server's log.")
			return
		}
		viaLDAP = true
	case f.get("username") != "":
		c.loginFail(w, r, http.StatusBadRequest, "This server has no directory (LDAP) login: log in with a token.")
		return
	default:
		c.loginFail(w, r, http.StatusBadRequest, "token: give a token (or a username and password).")
		return
	}
	var who api.WhoamiResponse
	if _, err := c.do(r, call{method: http.MethodGet, path: "/v1/whoami", token: token}, &who); err != nil {
		var ae *apiError
		switch {
		case errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests:
			c.loginFail(w, r, ae.Status, "Too many failed logins from your network: wait a minute and try again.")
		case errors.As(err, &ae) && ae.Status == http.StatusUnauthorized:
			c.loginFail(w, r, ae.Status, "The token is invalid, expired or revoked.")
		case errors.As(err, &ae):
			c.loginFail(w, r, ae.Status, ae.Msg)
		default:
			c.log.Error("console: whoami", "err", err)
			c.loginFail(w, r, http.StatusInternalServerError, "The server could not check the token; see its log.")
		}
		return
	}
	now := c.cfg.Now()
	s := &sess{token: token, who: who, viaLDAP: viaLDAP, created: now, seen: now, expires: now.Add(c.cfg.SessionTTL)}
	if !who.Expires.IsZero() && who.Expires.Before(s.expires) {
		s.expires = who.Expires
	}
	id := c.sessions.add(s, now)
	http.SetCookie(w, sessionCookie(loginCookie, "", -1))
	http.SetCookie(w, sessionCookie(cookieName, id, int(s.expires.Sub(now)/time.Second)))
	http.Redirect(w, r, Prefix+"secrets", http.StatusSeeOther)
}

// ldapLogin posts the username and password to POST /v1/login and returns
// the session token it answers with ({"token": "..."}). The password and
// the request body are zeroed.
func (c *Console) ldapLogin(r *http.Request, f *form) (string, error) {
	user, err := json.Marshal(f.get("username"))
	if err != nil {
		return "", err
	}
	pw := f.bytes("password")
	body := make([]byte, 0, len(user)+2*len(pw)+32)
	body = append(body, `{"username":`...)
	body = append(body, user...)
	body = append(body, `,"password":`...)
	body = appendJSONString(body, pw)
	body = append(body, '}')
	defer clear(body)
	var out struct {
		Token string `json:"token"`
	}
	if _, err := c.do(r, call{method: http.MethodPost, path: "/v1/login", body: body}, &out); err != nil {
		return "", err
	}
	if out.Token == "" {
		return "", errors.New("POST /v1/login answered without a token")
	}
	return out.Token, nil
}

// appendJSONString appends b as a JSON string without making a Go string
// of it (b may be a password).
func appendJSONString(dst, b []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for _, ch := range b {
		switch {
		case ch == '"' || ch == '\\':
			dst = append(dst, '\\', ch)
		case ch < 0x20 || ch == '<' || ch == '>' || ch == '&':
			dst = append(dst, '\\', 'u', '0', '0', hex[ch>>4], hex[ch&0xf])
		default:
			dst = append(dst, ch)
		}
	}
	return append(dst, '"')
}

// logoutPost ends the session; a token that came from a directory login
// is revoked through POST /v1/logout.
func (c *Console) logoutPost(s *sess, _ *form, w http.ResponseWriter, r *http.Request) {
	c.sessions.remove(s)
	if s.viaLDAP {
		if _, err := c.do(r, call{method: http.MethodPost, path: "/v1/logout", token: s.token}, nil); err != nil {
			c.log.Warn("console: logout: revoking the session token failed", "principal", s.who.ID, "err", err)
		}
	}
	http.SetCookie(w, sessionCookie(cookieName, "", -1))
	http.Redirect(w, r, Prefix+"login?m=out", http.StatusSeeOther)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
