package console

import (
	"errors"
	"net/http"
)

// getHandler serves a page to a logged-in session.
type getHandler func(s *sess, w http.ResponseWriter, r *http.Request)

// postHandler handles a form whose CSRF token was checked.
type postHandler func(s *sess, f *form, w http.ResponseWriter, r *http.Request)

// session finds r's session. With none (or an expired one) it answers: a
// GET goes to the login page, anything else gets 401 and changes nothing.
func (c *Console) session(w http.ResponseWriter, r *http.Request) *sess {
	var id string
	if ck, err := r.Cookie(cookieName); err == nil {
		id = ck.Value
	}
	s, state := c.sessions.get(id, c.cfg.Now(), c.cfg.SessionIdle)
	switch {
	case state == sessionOK:
		return s
	case state == sessionExpired:
		c.toLogin(w, r, "expired", "Your session expired. Log in again; nothing was changed.")
	case id == "":
		c.toLogin(w, r, "", "You are not logged in. Log in; nothing was changed.")
	default:
		c.toLogin(w, r, "expired", "Your session has ended. Log in again; nothing was changed.")
	}
	return nil
}

// authed serves a page to a logged-in session.
func (c *Console) authed(h getHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s := c.session(w, r); s != nil {
			h(s, w, r)
		}
	}
}

// sameOrigin refuses a request another site made the browser send: its
// Origin, if any, must be this server, and Sec-Fetch-Site, if sent,
// same-origin. (SameSite=Strict already keeps the cookie off such
// requests, and the CSRF token is checked too; this is a third lock.)
// Under Referrer-Policy: no-referrer browsers send "Origin: null" with
// their own form posts: that is accepted only when Sec-Fetch-Site vouches
// for the request.
func sameOrigin(r *http.Request) bool {
	site := r.Header.Get("Sec-Fetch-Site")
	if site != "" && site != "same-origin" {
		return false
	}
	switch o := r.Header.Get("Origin"); o {
	case "", "https://" + r.Host:
		return true
	case "null":
		return site == "same-origin"
	}
	return false
}

// post reads a form of at most limit bytes (value: the fields that may be
// that long) and checks its CSRF token before h runs; every field is
// zeroed once h returns. A missing or wrong token is 403, and nothing
// reaches the API.
func (c *Console) post(limit int64, h postHandler, value ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s := c.session(w, r)
		if s == nil {
			return
		}
		if !sameOrigin(r) {
			c.fail(w, r, s, http.StatusForbidden, "Cross-site request refused. Nothing was changed.")
			return
		}
		f, err := readForm(r, limit, value...)
		if err != nil {
			c.formError(w, r, s, err)
			return
		}
		defer f.zero()
		if !equal(f.get("csrf"), s.csrf) {
			c.fail(w, r, s, http.StatusForbidden, "The form's security (CSRF) token is missing or wrong. Nothing was changed: reload the page and try again.")
			return
		}
		h(s, f, w, r)
	}
}

// formError answers a form that could not be read.
func (c *Console) formError(w http.ResponseWriter, r *http.Request, s *sess, err error) {
	code := http.StatusBadRequest
	if errors.Is(err, errTooLarge) {
		code = http.StatusRequestEntityTooLarge
	}
	c.fail(w, r, s, code, err.Error()+". Nothing was changed.")
}

// postJSON handles a script's JSON call: same origin, the session's CSRF
// token in X-CSRF-Token, a body of at most smallForm bytes.
func (c *Console) postJSON(h func(s *sess, body []byte, w http.ResponseWriter, r *http.Request)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set("X-Coffer-Fragment", "1") // a script's call: 401, not a redirect
		s := c.session(w, r)
		if s == nil {
			return
		}
		if !sameOrigin(r) || !equal(r.Header.Get("X-CSRF-Token"), s.csrf) {
			writeJSON(w, http.StatusForbidden, map[string]string{"error": "missing or wrong CSRF token, or a cross-site request: nothing was changed"})
			return
		}
		body, err := readBody(r, smallForm)
		defer clear(body)
		if err != nil {
			code := http.StatusBadRequest
			if errors.Is(err, errTooLarge) {
				code = http.StatusRequestEntityTooLarge
			}
			writeJSON(w, code, map[string]string{"error": err.Error()})
			return
		}
		h(s, body, w, r)
	}
}
