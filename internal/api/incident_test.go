package api_test

import (
	"net/http"
	"strings"
	"testing"

	"coffer/internal/authz"
)

// Quarantine of an enrolled agent that is not connected: it is revoked
// (its certificate no longer accepted: gone from the fleet) and the report
// says the removal could not be acknowledged.
func TestQuarantineRevokesTheAgent(t *testing.T) {
	e := newEnv(t)
	e.mustEnroll(e.admin, "node-bad", map[string]any{})
	var rep struct {
		Agent        string `json:"agent"`
		Connected    bool   `json:"connected"`
		Acknowledged bool   `json:"acknowledged"`
		Revoked      bool   `json:"revoked"`
	}
	if code := e.json(e.admin, "POST", "/v1/incident/quarantine", map[string]any{"agent": "node-bad", "reason": "IDS alert", "wait": "0s"}, &rep); code != 200 {
		t.Fatalf("quarantine: %d", code)
	}
	if !rep.Revoked || rep.Connected || rep.Acknowledged {
		t.Fatalf("report: %+v", rep)
	}
	if _, ok := e.agents(e.admin)["node-bad"]; ok {
		t.Fatal("the quarantined agent is still enrolled")
	}
	for body, code := range map[string]int{
		`{"agent":"node-bad","reason":"again"}`:  404,
		`{"agent":"node-x"}`:                     400,
		`{"reason":"x"}`:                         400,
		`{"agent":"a","reason":"x","wait":"1h"}`: 400,
	} {
		if got, b := e.do(e.admin, "POST", "/v1/incident/quarantine", body); got != code {
			t.Errorf("%s: %d %s, want %d", body, got, b, code)
		}
	}
	if code, _ := e.do(e.token(authz.Operator, ""), "POST", "/v1/incident/quarantine", `{"agent":"a","reason":"x"}`); code != 403 {
		t.Errorf("operator quarantines: %d", code)
	}
}

func TestRevokeVersionAndReport(t *testing.T) {
	e := newEnv(t)
	for _, v := range []string{"first-value", "leaked-value"} {
		if code, _ := e.do(e.admin, "PUT", "/v1/secrets/app/db", `{"value":"`+b64(v)+`"}`); code >= 300 {
			t.Fatal(code)
		}
	}
	var rep struct {
		WasCurrent bool   `json:"was_current"`
		Replaced   uint64 `json:"replaced"`
	}
	if code := e.json(e.admin, "POST", "/v1/incident/revoke-version", map[string]any{"secret": "app/db", "version": 2, "reason": "pasted in chat",
		"replace": map[string]any{"length": 32}}, &rep); code != 200 || !rep.WasCurrent || rep.Replaced != 3 {
		t.Fatalf("revoke-version: %d %+v", code, rep)
	}
	var meta struct {
		Current  uint64 `json:"current_version"`
		Versions []struct {
			Version uint64 `json:"version"`
			Revoked string `json:"revoked"`
		} `json:"versions"`
	}
	e.json(e.admin, "GET", "/v1/secrets/app/db", nil, &meta)
	if meta.Current != 3 || meta.Versions[1].Version != 2 || meta.Versions[1].Revoked != "pasted in chat" {
		t.Fatalf("after revoke: %+v", meta)
	}
	if code, body := e.do(e.admin, "POST", "/v1/incident/revoke-version", `{"secret":"app/db","version":2,"reason":"again"}`); code != 410 {
		t.Errorf("revoke twice: %d %s", code, body)
	}
	if code, _ := e.do(e.admin, "POST", "/v1/incident/revoke-version", `{"secret":"app/db","version":2}`); code != 400 {
		t.Errorf("no reason: %d", code)
	}
	var report struct {
		Changes []struct {
			Action string `json:"action"`
			Actor  string `json:"actor"`
		} `json:"changes"`
		Writers  []string `json:"writers"`
		Verified bool     `json:"verified"`
	}
	if code := e.json(e.admin, "GET", "/v1/incident/report?secret=app/db", nil, &report); code != 200 || !report.Verified {
		t.Fatalf("report: %d %+v", code, report)
	}
	actions := []string{}
	for _, c := range report.Changes {
		actions = append(actions, c.Action)
	}
	// The refused attempts are part of the chain of custody too.
	if got := strings.Join(actions, ","); !strings.HasPrefix(got, "secret.put,secret.put,incident.revoke_version") {
		t.Fatalf("changes: %s", got)
	}
	if len(report.Writers) != 1 {
		t.Fatalf("writers: %v", report.Writers)
	}
	for _, q := range []string{"secret=Bad", "secret=app/db&since=yesterday", "secret=app/db&x=1", ""} {
		if code, _ := e.do(e.admin, "GET", "/v1/incident/report?"+q, ""); code != 400 {
			t.Errorf("report?%s: %d", q, code)
		}
	}
	if code, _ := e.do(e.token(authz.Auditor, "other/"), "GET", "/v1/incident/report?secret=app/db", ""); code != 403 {
		t.Errorf("auditor outside scope: %d", code)
	}
	e.assertNoLeak("leaked-value")
}

func TestRevokeTokens(t *testing.T) {
	e := newEnv(t)
	ops := []string{e.token(authz.Operator, "payments/"), e.token(authz.Operator, "payments/eu/"), e.token(authz.Operator, "web/")}
	viewer := e.token(authz.Viewer, "")
	var rep struct {
		Revoked    []string `json:"revoked"`
		KeptCaller bool     `json:"kept_caller"`
	}
	if code := e.json(e.admin, "POST", "/v1/incident/revoke-tokens", map[string]any{"scope": "payments/*", "reason": "laptop stolen"}, &rep); code != 200 || len(rep.Revoked) != 2 {
		t.Fatalf("by scope: %d %+v", code, rep)
	}
	for i, tok := range ops {
		code, _ := e.do(tok, "GET", "/v1/secrets", "")
		if want := map[bool]int{true: 401, false: 200}[i < 2]; code != want {
			t.Errorf("operator %d: %d, want %d", i, code, want)
		}
	}
	if code := e.json(e.admin, "POST", "/v1/incident/revoke-tokens", map[string]any{"role": "admin", "reason": "rotate admins"}, &rep); code != 200 || !rep.KeptCaller {
		t.Fatalf("by role admin: %d %+v", code, rep)
	}
	if code, _ := e.do(e.admin, "GET", "/v1/secrets", ""); code != 200 {
		t.Fatal("the caller locked itself out")
	}
	if code, _ := e.do(viewer, "GET", "/v1/secrets", ""); code != 200 {
		t.Fatal("a viewer was revoked by role admin")
	}
	for _, body := range []string{`{"reason":"x"}`, `{"role":"king","reason":"x"}`, `{"role":"viewer"}`} {
		if code, _ := e.do(e.admin, "POST", "/v1/incident/revoke-tokens", body); code != 400 {
			t.Errorf("%s: %d", body, code)
		}
	}
}

func TestLockdown(t *testing.T) {
	e := newEnv(t)
	op := e.token(authz.Operator, "")
	scopedAdmin := e.token(authz.Admin, "payments/")
	if code, _ := e.do(scopedAdmin, "PUT", "/v1/incident/lockdown", `{"reason":"x"}`); code != 403 {
		t.Errorf("scoped admin declares: %d", code)
	}
	if code, _ := e.do(op, "PUT", "/v1/incident/lockdown", `{"reason":"x"}`); code != 403 {
		t.Errorf("operator declares: %d", code)
	}
	if code, _ := e.do(e.admin, "PUT", "/v1/incident/lockdown", `{}`); code != 400 {
		t.Errorf("no reason: %d", code)
	}
	if code, body := e.do(e.admin, "PUT", "/v1/incident/lockdown", `{"reason":"breach under investigation"}`); code != 200 {
		t.Fatalf("declare: %d %s", code, body)
	}
	code, body := e.do(op, "PUT", "/v1/secrets/app/x", `{"value":"eA=="}`)
	if code != 403 || !strings.Contains(body, "lockdown") || !strings.Contains(body, "breach under investigation") {
		t.Fatalf("operator write in lockdown: %d %s", code, body)
	}
	if code, _ := e.do(op, "GET", "/v1/secrets", ""); code != 200 {
		t.Errorf("operator read in lockdown: %d", code)
	}
	if code, _ := e.do(e.admin, "PUT", "/v1/secrets/app/x", `{"value":"eA=="}`); code != 201 {
		t.Errorf("admin write in lockdown: %d", code)
	}
	join, _ := e.mint(e.admin, map[string]any{"role": "agent"})
	if code, _, _ := e.enroll(join, "node-new"); code != http.StatusForbidden {
		t.Errorf("enrollment in lockdown: %d", code)
	}
	var st struct {
		Lockdown *struct {
			Reason string `json:"reason"`
		} `json:"lockdown"`
	}
	if code := e.json(e.token(authz.Auditor, ""), "GET", "/v1/incident/lockdown", nil, &st); code != 200 || st.Lockdown == nil {
		t.Fatalf("status: %d %+v", code, st)
	}
	if code, _ := e.do(e.admin, "DELETE", "/v1/incident/lockdown", ""); code != 204 {
		t.Fatalf("lift: %d", code)
	}
	if code, _ := e.do(e.admin, "DELETE", "/v1/incident/lockdown", ""); code != 409 {
		t.Errorf("lift twice: %d", code)
	}
	if code, _ := e.do(op, "PUT", "/v1/secrets/app/y", `{"value":"eA=="}`); code != 201 {
		t.Errorf("operator write after lift: %d", code)
	}
}
