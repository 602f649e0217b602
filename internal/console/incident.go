package console

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"coffer/internal/api"
	"coffer/internal/incident"
)

// The incident page drives the API's incident response
// (/v1/incident/...): quarantine a host, revoke a leaked version, revoke
// tokens, declare or lift a lockdown, and a secret's chain of custody.
// Every action is posted with the CSRF token and a reason (the API
// refuses without one; its message is shown); the page after an action
// shows what the API reported, never what was posted.

// incidentView is the data of the incident page.
type incidentView struct {
	CSRF string
	// Status is the lockdown in force (nil: the session may not read it).
	Status *api.LockdownStatus
	// Agents are the hosts the quarantine form offers (agent.read).
	Agents []api.AgentView
	// CanManage: agent.manage (quarantine, revoke a version, lockdown);
	// CanTokens: token.manage (revoke tokens); CanReport: audit.read.
	CanManage, CanTokens, CanReport bool

	Quarantined   *api.QuarantineReport
	Revoked       *api.RevokeVersionReport
	TokensRevoked *api.RevokeTokensReport
	Lockdown      string // what a lockdown action did

	// Report is the chain of custody asked for (RSecret, RSince, RUntil).
	Report                  *incident.Report
	RSecret, RSince, RUntil string
}

func (c *Console) incidentPage(s *sess, w http.ResponseWriter, r *http.Request) {
	v, err := c.incidentData(s, r)
	if err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	q := r.URL.Query()
	if name := strings.TrimSpace(q.Get("secret")); name != "" && v.CanReport {
		v.RSecret, v.RSince, v.RUntil = name, strings.TrimSpace(q.Get("since")), strings.TrimSpace(q.Get("until"))
		aq := url.Values{"secret": {name}}
		for k, t := range map[string]string{"since": v.RSince, "until": v.RUntil} {
			if t != "" {
				aq.Set(k, t)
			}
		}
		var rep incident.Report
		if _, err := c.as(s, r, call{method: http.MethodGet, path: "/v1/incident/report", query: aq}, &rep); err != nil {
			c.failAPI(w, r, s, err)
			return
		}
		v.Report = &rep
	}
	c.render(w, s, http.StatusOK, "incident", "Incident", v)
}

// incidentData is the page without results: the lockdown banner, the
// host picker and which forms the session gets.
func (c *Console) incidentData(s *sess, r *http.Request) (incidentView, error) {
	v := incidentView{CSRF: s.csrf, CanManage: s.can("agent.manage"), CanTokens: s.can("token.manage"), CanReport: s.can("audit.read")}
	if v.CanReport {
		var st api.LockdownStatus
		if _, err := c.as(s, r, call{method: http.MethodGet, path: "/v1/incident/lockdown"}, &st); err != nil {
			return v, err
		}
		v.Status = &st
	}
	if v.CanManage && s.can("agent.read") {
		if _, err := c.as(s, r, call{method: http.MethodGet, path: "/v1/agents"}, &v.Agents); err != nil {
			return v, err
		}
	}
	return v, nil
}

// incidentResult renders the page with what an action did.
func (c *Console) incidentResult(s *sess, w http.ResponseWriter, r *http.Request, set func(*incidentView)) {
	v, err := c.incidentData(s, r)
	if err != nil {
		c.failAPI(w, r, s, err)
		return
	}
	set(&v)
	c.render(w, s, http.StatusOK, "incident", "Incident", v)
}

// incidentCall posts body to the API as s; on an error it answers with
// the API's message and returns false.
func (c *Console) incidentCall(s *sess, w http.ResponseWriter, r *http.Request, method, path string, body, out any) bool {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			c.failAPI(w, r, s, err)
			return false
		}
	}
	if _, err := c.as(s, r, call{method: method, path: path, body: b}, out); err != nil {
		c.failAPI(w, r, s, err)
		return false
	}
	return true
}

func (c *Console) quarantinePost(s *sess, f *form, w http.ResponseWriter, r *http.Request) {
	req := api.QuarantineRequest{Agent: strings.TrimSpace(f.get("agent")), Reason: strings.TrimSpace(f.get("reason")), Wait: strings.TrimSpace(f.get("wait"))}
	var rep api.QuarantineReport
	if !c.incidentCall(s, w, r, http.MethodPost, "/v1/incident/quarantine", req, &rep) {
		return
	}
	c.incidentResult(s, w, r, func(v *incidentView) { v.Quarantined = &rep })
}

func (c *Console) revokeVersionPost(s *sess, f *form, w http.ResponseWriter, r *http.Request) {
	req := api.RevokeVersionRequest{Secret: strings.TrimSpace(f.get("secret")), Reason: strings.TrimSpace(f.get("reason"))}
	if vs := strings.TrimPrefix(strings.TrimSpace(f.get("version")), "v"); vs != "" {
		n, err := strconv.ParseUint(vs, 10, 64)
		if err != nil {
			c.formError(w, r, s, fmt.Errorf("%w: version %q: a version number such as 3", errBadForm, vs))
			return
		}
		req.Version = n
	}
	if f.get("replace") != "" {
		n, err := strconv.Atoi(strings.TrimSpace(f.get("length")))
		if err != nil {
			c.formError(w, r, s, fmt.Errorf("%w: length: a number of characters for the replacement", errBadForm))
			return
		}
		req.Replace = &api.GenerateSpec{Length: n, Alphabet: strings.TrimSpace(f.get("alphabet"))}
	}
	var rep api.RevokeVersionReport
	if !c.incidentCall(s, w, r, http.MethodPost, "/v1/incident/revoke-version", req, &rep) {
		return
	}
	c.incidentResult(s, w, r, func(v *incidentView) { v.Revoked = &rep })
}

func (c *Console) revokeTokensPost(s *sess, f *form, w http.ResponseWriter, r *http.Request) {
	req := api.RevokeTokensRequest{
		Principal: strings.TrimSpace(f.get("principal")), Role: strings.TrimSpace(f.get("role")),
		Scope: strings.TrimSpace(f.get("scope")), CreatedBy: strings.TrimSpace(f.get("created_by")),
		Reason: strings.TrimSpace(f.get("reason")),
	}
	var rep api.RevokeTokensReport
	if !c.incidentCall(s, w, r, http.MethodPost, "/v1/incident/revoke-tokens", req, &rep) {
		return
	}
	c.incidentResult(s, w, r, func(v *incidentView) { v.TokensRevoked = &rep })
}

func (c *Console) lockdownPost(s *sess, f *form, w http.ResponseWriter, r *http.Request) {
	req := api.LockdownRequest{Reason: strings.TrimSpace(f.get("reason")), Freeze: f.get("freeze") != ""}
	var st api.LockdownStatus
	if !c.incidentCall(s, w, r, http.MethodPut, "/v1/incident/lockdown", req, &st) {
		return
	}
	msg := "Lockdown declared: every write is refused except by admins."
	if st.Frozen {
		msg = "Lockdown declared, deliveries frozen: every write is refused except by admins, and no agent is sent anything new."
	}
	c.incidentResult(s, w, r, func(v *incidentView) { v.Lockdown = msg })
}

func (c *Console) liftPost(s *sess, f *form, w http.ResponseWriter, r *http.Request) {
	if !c.incidentCall(s, w, r, http.MethodDelete, "/v1/incident/lockdown", nil, nil) {
		return
	}
	c.incidentResult(s, w, r, func(v *incidentView) { v.Lockdown = "Lockdown lifted: writes and deliveries resume." })
}
