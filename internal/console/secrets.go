package console

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"coffer/internal/api"
	"coffer/internal/broker"
	"coffer/internal/catalog"
)

type secretsView struct {
	Secrets []secretRow
	Deleted []catalog.SecretMeta
	Scope   string
	More    int // secrets listed without their details (over maxDetailed)
}

// secretRow is a listed secret with, for the first maxDetailed, its last
// author and its rollout (from GET /v1/secrets/{name}: the list has no
// versions).
type secretRow struct {
	catalog.SecretMeta
	Author  string
	Rollout *rollout
}

// maxDetailed bounds the secrets whose details the list page reads.
const maxDetailed = 100

func (c *Console) secretsPage(s *sess, w http.ResponseWriter, r *http.Request) {
	var v secretsView
	var list []catalog.SecretMeta
	if _, err := c.as(s, r, call{method: http.MethodGet, path: "/v1/secrets"}, &list); err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	for i, m := range list {
		row := secretRow{SecretMeta: m}
		if i < maxDetailed {
			if d, err := c.showSecret(s, r, m.Name); err == nil {
				ro := newRollout(d)
				row.Rollout = &ro
				if len(d.Versions) > 0 {
					row.Author = d.Versions[0].Author
				}
			}
		} else {
			v.More++
		}
		v.Secrets = append(v.Secrets, row)
	}
	if _, err := c.as(s, r, call{method: http.MethodGet, path: "/v1/secrets", query: url.Values{"deleted": {"true"}}}, &v.Deleted); err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	v.Scope = s.who.Scope
	c.render(w, s, http.StatusOK, "secrets", "Secrets", v)
}

// rollout is a secret's holders with the rollout's progress.
type rollout struct {
	Name    string
	Current uint64
	Holders []holderRow
	Done    int // containers holding the current version, acknowledged
	Pending int
	Total   int
}

type holderRow struct {
	broker.Holder
	State string // current, pending, outdated
}

func newRollout(v api.SecretView) rollout {
	ro := rollout{Name: v.Name, Current: v.Current, Total: len(v.Holders)}
	for _, h := range v.Holders {
		row := holderRow{Holder: h.Holder}
		switch {
		case h.Version == v.Current && !h.Pending:
			row.State = "current"
			ro.Done++
		case h.Pending:
			row.State = "pending"
			ro.Pending++
		default:
			row.State = "outdated"
		}
		ro.Holders = append(ro.Holders, row)
	}
	return ro
}

type secretView struct {
	api.SecretView
	Rollout rollout
	Live    bool
}

func (c *Console) showSecret(s *sess, r *http.Request, name string) (api.SecretView, error) {
	var v api.SecretView
	_, err := c.as(s, r, call{method: http.MethodGet, path: "/v1/secrets/" + escapePath(name)}, &v)
	return v, err
}

func (c *Console) secretPage(s *sess, w http.ResponseWriter, r *http.Request) {
	v, err := c.showSecret(s, r, r.PathValue("name"))
	if err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	c.render(w, s, http.StatusOK, "secret", v.Name, secretView{SecretView: v, Rollout: newRollout(v), Live: v.Deleted.IsZero()})
}

// holdersFragment is the rollout table alone, which the script refreshes.
func (c *Console) holdersFragment(s *sess, w http.ResponseWriter, r *http.Request) {
	v, err := c.showSecret(s, r, r.PathValue("name"))
	if err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	c.fragment(w, "secret", "holders", newRollout(v))
}

// putSecret stores a new version from the form's value, an uploaded file
// or a generated value. The value goes from the form's buffer into a JSON
// body that is zeroed once the API has answered; it is never rendered.
func (c *Console) putSecret(s *sess, f *form, w http.ResponseWriter, r *http.Request) {
	name := strings.TrimSpace(f.get("name"))
	if name == "" {
		c.fail(w, r, s, http.StatusBadRequest, "name: the secret's name is required. Nothing was changed.")
		return
	}
	var body []byte
	switch src := f.get("source"); src {
	case "value", "file":
		val := f.bytes(src)
		if len(val) == 0 {
			c.fail(w, r, s, http.StatusBadRequest, src+": empty; give a value, a file or choose generate. Nothing was changed.")
			return
		}
		if len(val) > c.cfg.MaxValueSize {
			c.fail(w, r, s, http.StatusRequestEntityTooLarge,
				fmt.Sprintf("%s: the value is larger than the server's limit of %d bytes. Nothing was changed.", src, c.cfg.MaxValueSize))
			return
		}
		body = make([]byte, 0, base64.StdEncoding.EncodedLen(len(val))+16)
		body = append(body, `{"value":"`...)
		body = base64.StdEncoding.AppendEncode(body, val)
		body = append(body, `"}`...)
	case "generate":
		n, err := strconv.Atoi(strings.TrimSpace(f.get("length")))
		if err != nil || n <= 0 {
			c.fail(w, r, s, http.StatusBadRequest, "length: the number of characters to generate (a positive number). Nothing was changed.")
			return
		}
		body, _ = json.Marshal(api.PutSecretRequest{Generate: &api.GenerateSpec{Length: n, Alphabet: f.get("alphabet")}})
	default:
		c.fail(w, r, s, http.StatusBadRequest, "source: choose value, file or generate. Nothing was changed.")
		return
	}
	var meta catalog.SecretMeta
	_, err := c.as(s, r, call{method: http.MethodPut, path: "/v1/secrets/" + escapePath(name), body: body}, &meta)
	clear(body)
	if err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	s.setFlash(fmt.Sprintf("Stored version %d of %s.", meta.Current, meta.Name))
	http.Redirect(w, r, Prefix+"secrets/"+escapePath(meta.Name), http.StatusSeeOther)
}

// confirmView is the confirmation page of a deletion: what it would do,
// from the API's dry run, and a form that asks for the name again.
type confirmView struct {
	Kind    string // secret or binding
	Name    string
	Action  string // the form's action
	Purge   bool
	Effects []broker.Effect
	Note    string
}

// deleteSecret first shows what a deletion would do (the API's dry run);
// only a second post with the name typed again deletes.
func (c *Console) deleteSecret(s *sess, f *form, w http.ResponseWriter, r *http.Request) {
	name := f.get("name")
	if name == "" {
		c.fail(w, r, s, http.StatusBadRequest, "name: which secret to delete. Nothing was changed.")
		return
	}
	q := url.Values{}
	purge := f.get("purge") == "on" || f.get("purge") == "true"
	if purge {
		q.Set("purge", "true")
	}
	path := "/v1/secrets/" + escapePath(name)
	if !f.has("confirm") {
		q.Set("dry_run", "true")
		var plan api.SecretPlan
		if _, err := c.as(s, r, call{method: http.MethodDelete, path: path, query: q}, &plan); err != nil {
			c.failAPI(w, r, s, err)
			return
		}
		note := fmt.Sprintf("It can be restored (undelete) until %s.", plan.PurgeAfter.UTC().Format("2006-01-02 15:04Z"))
		if purge {
			note = "Purge destroys every version now: it cannot be undone."
		}
		c.render(w, s, http.StatusOK, "confirm", "Delete "+name, confirmView{Kind: "secret", Name: name, Action: Prefix + "secrets/delete",
			Purge: purge, Effects: plan.Effects, Note: note})
		return
	}
	if f.get("confirm") != name {
		c.fail(w, r, s, http.StatusBadRequest, "confirm: type the secret's name exactly to delete it. Nothing was changed.")
		return
	}
	if _, err := c.as(s, r, call{method: http.MethodDelete, path: path, query: q}, nil); err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	if purge {
		s.setFlash("Purged " + name + ": every version is destroyed.")
	} else {
		s.setFlash("Deleted " + name + "; containers lose it now. It can be restored from the list of deleted secrets.")
	}
	http.Redirect(w, r, Prefix+"secrets", http.StatusSeeOther)
}

func (c *Console) rollbackSecret(s *sess, f *form, w http.ResponseWriter, r *http.Request) {
	name := f.get("name")
	to, err := strconv.ParseUint(strings.TrimSpace(f.get("to")), 10, 64)
	if err != nil || name == "" {
		c.fail(w, r, s, http.StatusBadRequest, "to: the version to roll back to (a number). Nothing was changed.")
		return
	}
	body, _ := json.Marshal(api.RollbackRequest{To: &to})
	var meta catalog.SecretMeta
	if _, err := c.as(s, r, call{method: http.MethodPost, path: "/v1/rollback/" + escapePath(name), body: body}, &meta); err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	s.setFlash(fmt.Sprintf("Version %d of %s is a copy of version %d.", meta.Current, meta.Name, to))
	http.Redirect(w, r, Prefix+"secrets/"+escapePath(name), http.StatusSeeOther)
}

func (c *Console) undeleteSecret(s *sess, f *form, w http.ResponseWriter, r *http.Request) {
	name := f.get("name")
	if name == "" {
		c.fail(w, r, s, http.StatusBadRequest, "name: which secret to restore. Nothing was changed.")
		return
	}
	if _, err := c.as(s, r, call{method: http.MethodPost, path: "/v1/undelete/" + escapePath(name)}, nil); err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	s.setFlash("Restored " + name + ".")
	http.Redirect(w, r, Prefix+"secrets/"+escapePath(name), http.StatusSeeOther)
}
