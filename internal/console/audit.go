package console

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"coffer/internal/api"
	"coffer/internal/audit"
)

// auditFields are the filters of the audit page, as the GET form sends
// them; all but container are the API's own (GET /v1/audit).
type auditFields struct {
	Secret, Actor, Action, Result, Container, Since, Until string
	Limit                                                  int
}

const (
	defaultAuditLimit = 200
	maxAuditLimit     = 5000
	// containerScan is how many of the newest matching records the
	// console reads to filter by container (the API has no such filter).
	containerScan = 20000
)

func auditFieldsOf(q url.Values) (auditFields, error) {
	f := auditFields{
		Secret: strings.TrimSpace(q.Get("secret")), Actor: strings.TrimSpace(q.Get("actor")),
		Action: strings.TrimSpace(q.Get("action")), Result: strings.TrimSpace(q.Get("result")),
		Container: strings.TrimSpace(q.Get("container")),
		Since:     strings.TrimSpace(q.Get("since")), Until: strings.TrimSpace(q.Get("until")),
		Limit: defaultAuditLimit,
	}
	if v := strings.TrimSpace(q.Get("limit")); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxAuditLimit {
			return f, &apiError{Status: http.StatusBadRequest, Msg: "limit: a number from 1 to " + strconv.Itoa(maxAuditLimit)}
		}
		f.Limit = n
	}
	return f, nil
}

// query is the API query of f.
func (f auditFields) query() url.Values {
	q := url.Values{}
	for k, v := range map[string]string{"secret": f.Secret, "actor": f.Actor, "action": f.Action, "result": f.Result, "since": f.Since, "until": f.Until} {
		if v != "" {
			q.Set(k, v)
		}
	}
	limit := f.Limit
	if f.Container != "" {
		limit = containerScan
	}
	q.Set("limit", strconv.Itoa(limit))
	return q
}

// events queries the API and applies the container filter: a record of a
// delivery names its container by id and by name; either matches.
func (c *Console) events(s *sess, r *http.Request, f auditFields) ([]audit.Event, error) {
	var evs []audit.Event
	if _, err := c.as(s, r, call{method: http.MethodGet, path: "/v1/audit", query: f.query()}, &evs); err != nil {
		return nil, err
	}
	if f.Container != "" {
		evs = slices.DeleteFunc(evs, func(e audit.Event) bool {
			return e.Details["container_id"] != f.Container && e.Details["container"] != f.Container
		})
		if len(evs) > f.Limit {
			evs = evs[len(evs)-f.Limit:]
		}
	}
	return evs, nil
}

type auditView struct {
	F      auditFields
	Events []audit.Event // newest first
	Export string        // the export link with the same filters
	Verify *api.VerifyResponse
}

func (c *Console) auditPage(s *sess, w http.ResponseWriter, r *http.Request) {
	c.auditRender(s, w, r, nil)
}

func (c *Console) auditRender(s *sess, w http.ResponseWriter, r *http.Request, verify *api.VerifyResponse) {
	f, err := auditFieldsOf(r.URL.Query())
	if err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	evs, err := c.events(s, r, f)
	if err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	slices.Reverse(evs)
	q := r.URL.Query()
	q.Del("verify")
	c.render(w, s, http.StatusOK, "audit", "Audit", auditView{F: f, Events: evs, Export: Prefix + "audit/export?" + q.Encode(), Verify: verify})
}

// auditExport downloads the filtered records as the API gives them (JSON,
// oldest first), chain fields included, for offline checking.
func (c *Console) auditExport(s *sess, w http.ResponseWriter, r *http.Request) {
	f, err := auditFieldsOf(r.URL.Query())
	if err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	evs, err := c.events(s, r, f)
	if err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	if evs == nil {
		evs = []audit.Event{}
	}
	b, err := json.MarshalIndent(evs, "", "  ")
	if err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Disposition", `attachment; filename="coffer-audit.json"`)
	w.Write(append(b, '\n'))
}

// auditVerify checks the chain (GET /v1/audit/verify, with an optional
// head kept elsewhere) and shows the result above the records.
func (c *Console) auditVerify(s *sess, w http.ResponseWriter, r *http.Request) {
	q := url.Values{}
	if h := strings.TrimSpace(r.URL.Query().Get("head")); h != "" {
		q.Set("head", h)
	}
	var v api.VerifyResponse
	if _, err := c.as(s, r, call{method: http.MethodGet, path: "/v1/audit/verify", query: q}, &v); err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	rest := r.URL.Query() // the page's filters, kept
	rest.Del("head")
	r.URL.RawQuery = rest.Encode()
	c.auditRender(s, w, r, &v)
}
