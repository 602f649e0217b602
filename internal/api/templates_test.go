package api_test

import (
	"strings"
	"testing"

	"coffer/internal/authz"
)

func TestTemplates(t *testing.T) {
	e := newEnv(t)
	for name, v := range map[string]string{"pay/user": "app", "pay/password": "tpl-s3cret", "other/x": "o"} {
		if code, _ := e.do(e.admin, "PUT", "/v1/secrets/"+name, `{"value":"`+b64(v)+`"}`); code != 201 {
			t.Fatal(code)
		}
	}
	body := `{"template":"postgres://{{ secret \"pay/user\" }}:{{ secret \"pay/password\" }}@db/app"}`
	var plan map[string]any
	if code := e.json(e.admin, "PUT", "/v1/templates/pay/dsn?dry_run=true", rawJSON(body), &plan); code != 200 || plan["action"] != "template" {
		t.Fatalf("dry run: %d %v", code, plan)
	}
	var meta struct {
		Current  uint64 `json:"current_version"`
		Template struct {
			Inputs []string `json:"inputs"`
		} `json:"template"`
	}
	if code := e.json(e.admin, "PUT", "/v1/templates/pay/dsn", rawJSON(body), &meta); code != 201 || meta.Current != 1 || len(meta.Template.Inputs) != 2 {
		t.Fatalf("put: %d %+v", code, meta)
	}
	// An input rotates: the template has a new version.
	e.do(e.admin, "PUT", "/v1/secrets/pay/password", `{"value":"`+b64("tpl-s3cret-2")+`"}`)
	e.json(e.admin, "GET", "/v1/secrets/pay/dsn", nil, &meta)
	if meta.Current != 2 {
		t.Fatalf("after an input rotated: %+v", meta)
	}
	scoped := e.token(authz.Operator, "pay/")
	for _, c := range []struct {
		tok, name, body string
		code            int
		want            string
	}{
		{scoped, "pay/t", `{"template":"{{ secret \"other/x\" }}"}`, 400, "outside this token's scope"},
		{scoped, "other/t", `{"template":"{{ secret \"pay/user\" }}"}`, 403, ""},
		{e.admin, "pay/t", `{"template":"{{ secret \"pay/nope\" }}"}`, 400, "does not exist"},
		{e.admin, "pay/t", `{"template":"{{ range 5 }}{{ end }}"}`, 400, "range"},
		{e.admin, "pay/t", `{"template":""}`, 400, "required"},
		{e.admin, "pay/user", `{"template":"{{ secret \"pay/password\" }}"}`, 409, "values of its own"},
		{e.admin, "pay/t", `{"template":"{{ secret \"pay/dsn\" }}"}`, 400, "do not nest"},
	} {
		code, b := e.do(c.tok, "PUT", "/v1/templates/"+c.name, c.body)
		if code != c.code || !strings.Contains(b, c.want) {
			t.Errorf("%s %s: %d %s, want %d %q", c.name, c.body, code, b, c.code, c.want)
		}
	}
	if code, b := e.do(e.admin, "PUT", "/v1/secrets/pay/dsn", `{"value":"eA=="}`); code != 409 || !strings.Contains(b, "templated") {
		t.Errorf("put on a template: %d %s", code, b)
	}
	e.assertNoLeak("tpl-s3cret")
}

type rawJSON string

func (r rawJSON) MarshalJSON() ([]byte, error) { return []byte(r), nil }
