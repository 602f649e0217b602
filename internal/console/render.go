package console

import (
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"
)

// parsePages parses each page template with the layout into its own set.
func parsePages() map[string]*template.Template {
	funcs := template.FuncMap{
		"when": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"secretURL":  func(name string) string { return Prefix + "secrets/" + escapePath(name) },
		"holdersURL": func(name string) string { return Prefix + "fragment/holders/" + escapePath(name) },
		"putForm": func(s *sess, name string, rotate bool) putFormView {
			return putFormView{CSRF: s.csrf, Name: name, Scope: s.who.Scope, Rotate: rotate}
		},
		"bindingURL": func(name string) string { return Prefix + "bindings/edit?name=" + url.QueryEscape(name) },
		"mode":       func(m uint32) string { return fmt.Sprintf("0%o", m) },
		"labels":     formatLabels,
		"pct": func(n, of int) int {
			if of == 0 {
				return 100
			}
			return n * 100 / of
		},
	}
	layout := template.Must(template.New("layout.html").Funcs(funcs).ParseFS(assets, "assets/templates/layout.html", "assets/templates/partials.html"))
	names, err := fs.Glob(assets, "assets/templates/*.html")
	if err != nil {
		panic(err)
	}
	out := map[string]*template.Template{}
	for _, n := range names {
		base := path.Base(n)
		if base == "layout.html" || base == "partials.html" {
			continue
		}
		out[strings.TrimSuffix(base, ".html")] = template.Must(template.Must(layout.Clone()).ParseFS(assets, n))
	}
	return out
}

// putFormView is the data of the put (store or rotate) form.
type putFormView struct {
	CSRF, Name, Scope string
	Rotate            bool
}

// view is what every page gets.
type view struct {
	Title   string
	Nav     string // the active section
	S       *sess  // nil on the login and error pages
	Flash   string
	Data    any
	CanPut  bool // secret.write
	CanBind bool // binding.write
	Audit   bool // audit.read
	Agents  bool // agent.read
}

// render writes page name with data, status code.
func (c *Console) render(w http.ResponseWriter, s *sess, code int, name, title string, data any) {
	v := view{Title: title, Nav: name, S: s, Data: data}
	if s != nil {
		v.Flash = s.takeFlash()
		v.CanPut, v.CanBind = s.can("secret.write"), s.can("binding.write")
		v.Audit, v.Agents = s.can("audit.read"), s.can("agent.read")
	}
	c.write(w, code, name, v, "layout.html")
}

// fragment writes the template block name of page (a part of a page the
// script refreshes).
func (c *Console) fragment(w http.ResponseWriter, page, name string, data any) {
	c.write(w, http.StatusOK, page, data, name)
}

func (c *Console) write(w http.ResponseWriter, code int, page string, data any, tmpl string) {
	t := c.pages[page]
	var buf bytes.Buffer
	if t == nil {
		c.log.Error("console: no such page template", "page", page)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&buf, tmpl, data); err != nil {
		c.log.Error("console: rendering", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

// errorPage is the data of the error page.
type errorPage struct {
	Status int
	Msg    string
	Back   string
}

// fail answers with an error page: status and a message for a person.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, s *sess, code int, msg string) {
	back := ""
	if s != nil {
		back = Prefix
	}
	c.render(w, s, code, "error", http.StatusText(code), errorPage{Status: code, Msg: msg, Back: back})
}

// failAPI answers with the API's error, or ends the session if the API
// refused its token.
func (c *Console) failAPI(w http.ResponseWriter, r *http.Request, s *sess, err error) {
	if errors.Is(err, errSessionEnded) {
		c.toLogin(w, r, "expired", "Your session has ended (its token expired or was revoked). Log in again; nothing was changed.")
		return
	}
	var ae *apiError
	if errors.As(err, &ae) {
		msg := ae.Msg
		switch ae.Status {
		case http.StatusForbidden:
			msg = "Permission denied: " + strings.TrimPrefix(msg, "permission denied: ") + ". Nothing was changed."
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusConflict, http.StatusNotFound, http.StatusGone:
			msg += ". Nothing was changed."
		}
		c.fail(w, r, s, ae.Status, msg)
		return
	}
	c.log.Error("console: API call", "err", err)
	c.fail(w, r, s, http.StatusInternalServerError, "The server could not answer; see its log.")
}

// toLogin sends a page load to the login page, with the message of key
// (a known one: nothing the client chose is reflected), and answers
// anything else with 401 and msg.
func (c *Console) toLogin(w http.ResponseWriter, r *http.Request, key, msg string) {
	http.SetCookie(w, sessionCookie(cookieName, "", -1))
	if r.Method == http.MethodGet && r.Header.Get("X-Coffer-Fragment") == "" {
		to := Prefix + "login"
		if key != "" {
			to += "?m=" + key
		}
		http.Redirect(w, r, to, http.StatusSeeOther)
		return
	}
	c.render(w, nil, http.StatusUnauthorized, "error", "Session ended", errorPage{Status: http.StatusUnauthorized, Msg: msg, Back: Prefix + "login"})
}
