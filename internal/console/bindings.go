package console

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"coffer/internal/api"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/policy"
)

type bindingsView struct {
	Bindings []catalog.Binding
}

func (c *Console) bindingsPage(s *sess, w http.ResponseWriter, r *http.Request) {
	var v bindingsView
	if _, err := c.as(s, r, call{method: http.MethodGet, path: "/v1/bindings"}, &v.Bindings); err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	c.render(w, s, http.StatusOK, "bindings", "Bindings", v)
}

type bindingEditView struct {
	B      catalog.Binding
	Create bool
	Mode   string
}

func (c *Console) bindingEditPage(s *sess, w http.ResponseWriter, r *http.Request) {
	v := bindingEditView{Create: true}
	if name := r.URL.Query().Get("name"); name != "" {
		if _, err := c.as(s, r, call{method: http.MethodGet, path: "/v1/bindings/" + escapePath(name)}, &v.B); err != nil {
			c.failAPI(w, r, s, err)
			return
		}
		v.Create = false
		v.Mode = fmt.Sprintf("0%o", v.B.Mode)
	}
	title := "New binding"
	if !v.Create {
		title = "Binding " + v.B.Name
	}
	c.render(w, s, http.StatusOK, "binding", title, v)
}

// bindingFields is a binding as the edit form (or the preview script)
// posts it: every field a string.
type bindingFields struct {
	Name      string `json:"name"`
	Secret    string `json:"secret"`
	Selector  string `json:"selector"`
	Image     string `json:"image"`
	Hosts     string `json:"hosts"`
	File      string `json:"file"`
	Mode      string `json:"mode"`
	UID       string `json:"uid"`
	GID       string `json:"gid"`
	ManagedBy string `json:"managed_by"`
	Create    string `json:"create"` // "1": create only (the name must be new)
}

func fieldsOf(f *form) bindingFields {
	return bindingFields{Name: f.get("name"), Secret: f.get("secret"), Selector: f.get("selector"), Image: f.get("image"),
		Hosts: f.get("hosts"), File: f.get("file"), Mode: f.get("mode"), UID: f.get("uid"), GID: f.get("gid"),
		ManagedBy: f.get("managed_by"), Create: f.get("create")}
}

// request turns the fields into the API's PUT: path, body and the
// precondition (create only, or replace only).
func (b bindingFields) request(dry bool) (call, error) {
	name := strings.TrimSpace(b.Name)
	if name == "" {
		return call{}, fmt.Errorf("%w: name: the binding's name is required", errBadForm)
	}
	mode, err := parseMode(b.Mode)
	if err != nil {
		return call{}, err
	}
	uid, err := parseID("uid", b.UID)
	if err != nil {
		return call{}, err
	}
	gid, err := parseID("gid", b.GID)
	if err != nil {
		return call{}, err
	}
	body, err := json.Marshal(catalog.Binding{Binding: policy.Binding{
		Name: name, Secret: strings.TrimSpace(b.Secret), Selector: strings.TrimSpace(b.Selector), Image: strings.TrimSpace(b.Image),
		Hosts: strings.TrimSpace(b.Hosts), File: strings.TrimSpace(b.File), Mode: mode, UID: uid, GID: gid,
	}, ManagedBy: b.ManagedBy})
	if err != nil {
		return call{}, err
	}
	h := http.Header{}
	if b.Create == "1" {
		h.Set("If-None-Match", "*")
	} else {
		h.Set("If-Match", "*")
	}
	c := call{method: http.MethodPut, path: "/v1/bindings/" + escapePath(name), body: body, header: h}
	if dry {
		c.query = url.Values{"dry_run": {"true"}}
	}
	return c, nil
}

func (c *Console) saveBinding(s *sess, f *form, w http.ResponseWriter, r *http.Request) {
	req, err := fieldsOf(f).request(false)
	if err != nil {
		c.formError(w, r, s, err)
		return
	}
	var out catalog.Binding
	if _, err := c.as(s, r, req, &out); err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	s.setFlash("Saved binding " + out.Name + ".")
	http.Redirect(w, r, Prefix+"bindings", http.StatusSeeOther)
}

// deleteBinding asks for confirmation with the API's dry run first, like
// deleteSecret.
func (c *Console) deleteBinding(s *sess, f *form, w http.ResponseWriter, r *http.Request) {
	name := f.get("name")
	if name == "" {
		c.fail(w, r, s, http.StatusBadRequest, "name: which binding to delete. Nothing was changed.")
		return
	}
	path := "/v1/bindings/" + escapePath(name)
	if !f.has("confirm") {
		var plan api.BindingPlan
		if _, err := c.as(s, r, call{method: http.MethodDelete, path: path, query: url.Values{"dry_run": {"true"}}}, &plan); err != nil {
			c.failAPI(w, r, s, err)
			return
		}
		c.render(w, s, http.StatusOK, "confirm", "Delete binding "+name, confirmView{Kind: "binding", Name: name,
			Action: Prefix + "bindings/delete", Effects: plan.Effects, Note: "The containers listed lose their files at once."})
		return
	}
	if f.get("confirm") != name {
		c.fail(w, r, s, http.StatusBadRequest, "confirm: type the binding's name exactly to delete it. Nothing was changed.")
		return
	}
	if _, err := c.as(s, r, call{method: http.MethodDelete, path: path}, nil); err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	s.setFlash("Deleted binding " + name + ".")
	http.Redirect(w, r, Prefix+"bindings", http.StatusSeeOther)
}

// previewAnswer is the preview script's answer: what saving the form now
// would do to the running containers, or why it cannot be saved.
type previewAnswer struct {
	Error          string          `json:"error,omitempty"`
	Change         string          `json:"change,omitempty"` // created, updated, unchanged
	Effects        []broker.Effect `json:"effects"`
	SecretsMissing []string        `json:"secrets_missing"`
}

// previewBinding is a dry run of the form's binding through the API.
func (c *Console) previewBinding(s *sess, body []byte, w http.ResponseWriter, r *http.Request) {
	var b bindingFields
	if err := json.Unmarshal(body, &b); err != nil {
		writeJSON(w, http.StatusBadRequest, previewAnswer{Error: "malformed preview request"})
		return
	}
	req, err := b.request(true)
	if err != nil {
		writeJSON(w, http.StatusOK, previewAnswer{Error: err.Error()})
		return
	}
	var plan api.BindingPlan
	if _, err := c.as(s, r, req, &plan); err != nil {
		c.jsonAPIError(w, err)
		return
	}
	out := previewAnswer{Effects: plan.Effects, SecretsMissing: plan.SecretsMissing}
	switch {
	case len(plan.Created) > 0:
		out.Change = "created"
	case len(plan.Updated) > 0:
		out.Change = "updated"
	default:
		out.Change = "unchanged"
	}
	writeJSON(w, http.StatusOK, out)
}

// jsonAPIError answers a script's call with the API's error; an ended
// session is 401, which sends the script to the login page.
func (c *Console) jsonAPIError(w http.ResponseWriter, err error) {
	if errors.Is(err, errSessionEnded) {
		writeJSON(w, http.StatusUnauthorized, previewAnswer{Error: "session ended"})
		return
	}
	var ae *apiError
	if errors.As(err, &ae) {
		writeJSON(w, http.StatusOK, previewAnswer{Error: ae.Msg})
		return
	}
	c.log.Error("console: API call", "err", err)
	writeJSON(w, http.StatusInternalServerError, previewAnswer{Error: "the server could not answer"})
}

// evaluateFields is the label-set form: which secrets would a container
// with these labels receive?
type evaluateFields struct {
	Labels      string `json:"labels"`
	ImageLabels string `json:"image_labels"`
	HostLabels  string `json:"host_labels"`
	Image       string `json:"image"`
}

type evaluateAnswer struct {
	Error string `json:"error,omitempty"`
	*api.Explanation
}

func (c *Console) evaluate(s *sess, body []byte, w http.ResponseWriter, r *http.Request) {
	var f evaluateFields
	if err := json.Unmarshal(body, &f); err != nil {
		writeJSON(w, http.StatusBadRequest, evaluateAnswer{Error: "malformed request"})
		return
	}
	req := api.EvaluateRequest{Image: strings.TrimSpace(f.Image)}
	var err error
	for _, l := range []struct {
		field, in string
		to        *map[string]string
	}{{"labels", f.Labels, &req.Labels}, {"image labels", f.ImageLabels, &req.ImageLabels}, {"host labels", f.HostLabels, &req.HostLabels}} {
		if *l.to, err = parseLabels(l.field, l.in); err != nil {
			writeJSON(w, http.StatusOK, evaluateAnswer{Error: err.Error()})
			return
		}
	}
	b, _ := json.Marshal(req)
	var ex api.Explanation
	if _, err := c.as(s, r, call{method: http.MethodPost, path: "/v1/evaluate", query: url.Values{"explain": {"true"}}, body: b}, &ex); err != nil {
		c.jsonAPIError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, evaluateAnswer{Explanation: &ex})
}
