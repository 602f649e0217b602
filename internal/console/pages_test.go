package console_test

import (
	"bytes"
	"context"
	"encoding/json"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"coffer/internal/authz"
	"coffer/internal/secret"
)

// writeForms are the markers of the forms that change something.
var writeForms = []string{`action="/ui/secrets/put"`, `action="/ui/secrets/delete"`, `action="/ui/secrets/rollback"`,
	`action="/ui/secrets/undelete"`, `action="/ui/bindings/save"`, `action="/ui/bindings/delete"`, `id="new-binding"`}

// A viewer sees the pages without a single write form, and its posts to
// write routes are refused by the API (403) with nothing changed.
func TestViewerSeesNoWriteFormsAndCannotWrite(t *testing.T) {
	s := newStack(t, stackOpts{})
	admin := s.browser()
	atok := admin.login(s.admin)
	put(t, admin, atok, "app/db", "viewer-test-value-1")
	if p := admin.postForm("/ui/bindings/save", url.Values{"csrf": {atok}, "create": {"1"}, "name": {"web-db"}, "secret": {"app/db"}, "selector": {"app=web"}}); p.code != http.StatusSeeOther {
		t.Fatalf("bind: %d\n%s", p.code, p.body)
	}

	v := s.browser()
	tok := v.login(s.token(authz.Viewer, "", 0))
	for _, path := range []string{"/ui/secrets", "/ui/secrets/app/db", "/ui/bindings", "/ui/bindings/edit?name=web-db", "/ui/bindings/edit"} {
		p := v.get(path)
		if p.code != http.StatusOK {
			t.Fatalf("%s: %d\n%s", path, p.code, p.body)
		}
		for _, f := range writeForms {
			if strings.Contains(p.body, f) {
				t.Errorf("%s: a viewer's page has the write form %s", path, f)
			}
		}
	}
	if p := v.get("/ui/audit"); p.code != http.StatusForbidden {
		t.Errorf("viewer's audit page: %d, want 403", p.code)
	}
	if strings.Contains(v.get("/ui/secrets").body, `href="/ui/audit"`) {
		t.Error("the viewer's navigation links to the audit page")
	}
	posts := []struct {
		path   string
		fields url.Values
	}{
		{"/ui/secrets/delete", url.Values{"name": {"app/db"}}},
		{"/ui/secrets/delete", url.Values{"name": {"app/db"}, "confirm": {"app/db"}}},
		{"/ui/secrets/rollback", url.Values{"name": {"app/db"}, "to": {"1"}}},
		{"/ui/bindings/save", url.Values{"create": {"0"}, "name": {"web-db"}, "secret": {"app/db"}, "selector": {"app=other"}}},
		{"/ui/bindings/delete", url.Values{"name": {"web-db"}, "confirm": {"web-db"}}},
	}
	for _, c := range posts {
		c.fields.Set("csrf", tok)
		p := v.postForm(c.path, c.fields)
		if p.code != http.StatusForbidden || !strings.Contains(p.body, "Permission denied") || !strings.Contains(p.body, "Nothing was changed") {
			t.Errorf("viewer %s: %d\n%s", c.path, p.code, p.body)
		}
	}
	p := v.postMultipart("/ui/secrets/put", map[string]string{"csrf": tok, "name": "app/db", "source": "value", "value": "viewer-write-attempt"}, nil)
	if p.code != http.StatusForbidden {
		t.Errorf("viewer put: %d\n%s", p.code, p.body)
	}
	if got := s.current("app/db"); got != 1 {
		t.Errorf("app/db is at v%d after the viewer's posts, want 1", got)
	}
	b, err := s.cat.GetBinding(context.Background(), "web-db")
	if err != nil || b.Selector != "app=web" {
		t.Errorf("binding changed by the viewer: %+v %v", b, err)
	}
	noLeak(t, s, "viewer-test-value-1")
	noLeak(t, s, "viewer-write-attempt")
}

// A scoped operator sees only its prefix and cannot write outside it.
func TestScopedOperatorSeesOnlyItsPrefix(t *testing.T) {
	s := newStack(t, stackOpts{})
	admin := s.browser()
	atok := admin.login(s.admin)
	put(t, admin, atok, "payments/db", "scoped-v1")
	put(t, admin, atok, "billing/db", "scoped-v2")

	op := s.browser()
	tok := op.login(s.token(authz.Operator, "payments/*", 0))
	list := op.get("/ui/secrets")
	if !strings.Contains(list.body, "payments/db") || strings.Contains(list.body, "billing/db") {
		t.Errorf("scoped list:\n%s", list.body)
	}
	if !strings.Contains(list.body, "scope payments/") || !strings.Contains(list.body, `action="/ui/secrets/put"`) {
		t.Error("the scoped operator's page shows neither its scope nor its put form")
	}
	if p := op.get("/ui/secrets/billing/db"); p.code != http.StatusForbidden && p.code != http.StatusNotFound {
		t.Errorf("out-of-scope secret page: %d", p.code)
	}
	p := op.postMultipart("/ui/secrets/put", map[string]string{"csrf": tok, "name": "billing/db", "source": "generate", "length": "20"}, nil)
	if p.code != http.StatusForbidden || !strings.Contains(html.UnescapeString(p.body), "Permission denied: billing/db is outside this token's scope") {
		t.Errorf("out-of-scope put: %d\n%s", p.code, p.body)
	}
	if s.current("billing/db") != 1 {
		t.Error("billing/db changed")
	}
	put(t, op, tok, "payments/api-key", "scoped-v3")
	noLeak(t, s, "scoped-v1")
	noLeak(t, s, "scoped-v3")
}

// put stores value through the console's form and checks the redirect.
func put(t *testing.T, b *browser, csrf, name, value string) {
	t.Helper()
	p := b.postMultipart("/ui/secrets/put", map[string]string{"csrf": csrf, "name": name, "source": "value", "value": value}, nil)
	if p.code != http.StatusSeeOther || p.header.Get("Location") != "/ui/secrets/"+name {
		t.Fatalf("put %s: %d %s\n%s", name, p.code, p.header.Get("Location"), p.body)
	}
}

// Values go in by typing, by file or generated, exactly, and never come
// back: not on the page after the redirect, not in an error, not in logs.
func TestPutRotateGenerateNeverEcho(t *testing.T) {
	s := newStack(t, stackOpts{maxValue: 4096})
	b := s.browser()
	tok := b.login(s.admin)
	const typed = "typed-value-4b1d"
	put(t, b, tok, "app/db", typed)
	page := b.get("/ui/secrets/app/db")
	if !strings.Contains(page.body, "Stored version 1 of app/db") {
		t.Errorf("no confirmation on the secret's page:\n%s", page.body)
	}
	if strings.Contains(page.body, typed) {
		t.Fatal("the value is on the page")
	}
	if list := b.get("/ui/secrets"); !strings.Contains(list.body, "<td>token:") || !strings.Contains(list.body, "none bound") {
		t.Errorf("the list shows no author or rollout:\n%s", list.body)
	}
	fileValue := []byte("-----BEGIN KEY-----\nline two\r\n\x00\xff binary tail\n")
	p := b.postMultipart("/ui/secrets/put", map[string]string{"csrf": tok, "name": "app/db", "source": "file"}, map[string][]byte{"file": fileValue})
	if p.code != http.StatusSeeOther {
		t.Fatalf("file put: %d\n%s", p.code, p.body)
	}
	if got := value(t, s, "app/db", 2); !bytes.Equal(got, fileValue) {
		t.Errorf("the file's bytes were changed: %q", got)
	}
	if got := value(t, s, "app/db", 1); string(got) != typed {
		t.Errorf("v1 = %q", got)
	}
	p = b.postMultipart("/ui/secrets/put", map[string]string{"csrf": tok, "name": "app/gen", "source": "generate", "length": "24", "alphabet": "hex"}, nil)
	if p.code != http.StatusSeeOther {
		t.Fatalf("generate: %d\n%s", p.code, p.body)
	}
	gen := value(t, s, "app/gen", 1)
	if len(gen) != 24 || strings.Trim(string(gen), "0123456789abcdef") != "" {
		t.Errorf("generated %d bytes of the wrong alphabet", len(gen))
	}
	// Bad input: a clear message naming the field, nothing stored, no echo.
	bad := []struct {
		fields map[string]string
		code   int
		msg    string
	}{
		{map[string]string{"name": "", "source": "value", "value": typed}, 400, "name:"},
		{map[string]string{"name": "app/../x", "source": "value", "value": typed}, 400, "Nothing was changed"},
		{map[string]string{"name": "Bad Name!", "source": "value", "value": typed}, 400, "Nothing was changed"},
		{map[string]string{"name": "app/empty", "source": "value", "value": ""}, 400, "value: empty"},
		{map[string]string{"name": "app/none", "source": "", "value": typed}, 400, "source:"},
		{map[string]string{"name": "app/len", "source": "generate", "length": "-3"}, 400, "length:"},
		{map[string]string{"name": "app/big", "source": "value", "value": typed + strings.Repeat("x", 4096)}, 413, "limit of 4096 bytes"},
		{map[string]string{"name": strings.Repeat("n", 5000), "source": "value", "value": typed}, 413, `field "name" is longer`},
	}
	for _, c := range bad {
		c.fields["csrf"] = tok
		p := b.postMultipart("/ui/secrets/put", c.fields, nil)
		if p.code != c.code || !strings.Contains(html.UnescapeString(p.body), c.msg) {
			t.Errorf("%.60v: %d, want %d with %q\n%s", c.fields, p.code, c.code, c.msg, p.body)
		}
	}
	// A body far over the limit is cut off before it is read.
	p = b.postMultipart("/ui/secrets/put", map[string]string{"csrf": tok, "name": "app/huge", "source": "file"}, map[string][]byte{"file": bytes.Repeat([]byte("h"), 200<<10)})
	if p.code != http.StatusRequestEntityTooLarge || !strings.Contains(p.body, "Nothing was changed") {
		t.Errorf("huge: %d\n%s", p.code, p.body)
	}
	for _, n := range []string{"app/empty", "app/none", "app/len", "app/big", "app/huge"} {
		if s.current(n) != 0 {
			t.Errorf("%s was stored", n)
		}
	}
	if s.current("app/db") != 2 {
		t.Errorf("app/db at v%d", s.current("app/db"))
	}
	noLeak(t, s, typed)
	noLeak(t, s, "line two")
	if strings.Contains(s.responses.String(), string(gen)) {
		t.Error("a generated value is in a response")
	}
}

func value(t *testing.T, s *stack, name string, v uint64) []byte {
	t.Helper()
	val, err := s.cat.Value(context.Background(), name, v)
	if err != nil {
		t.Fatal(err)
	}
	defer val.Zero()
	return bytes.Clone([]byte(val))
}

var _ = secret.Value(nil)

// Deleting asks first (with the API's dry run), then wants the name typed.
func TestDeleteNeedsConfirmation(t *testing.T) {
	s := newStack(t, stackOpts{})
	b := s.browser()
	tok := b.login(s.admin)
	put(t, b, tok, "app/db", "delete-test")
	p := b.postForm("/ui/secrets/delete", url.Values{"csrf": {tok}, "name": {"app/db"}})
	if p.code != http.StatusOK || !strings.Contains(p.body, `id="confirm-form"`) || !strings.Contains(p.body, "undelete") {
		t.Fatalf("first step: %d\n%s", p.code, p.body)
	}
	if s.current("app/db") != 1 {
		t.Fatal("the first step deleted")
	}
	p = b.postForm("/ui/secrets/delete", url.Values{"csrf": {tok}, "name": {"app/db"}, "confirm": {"app/d"}})
	if p.code != http.StatusBadRequest || !strings.Contains(p.body, "confirm:") {
		t.Fatalf("wrong confirmation: %d\n%s", p.code, p.body)
	}
	if s.current("app/db") != 1 {
		t.Fatal("a wrong confirmation deleted")
	}
	p = b.postForm("/ui/secrets/delete", url.Values{"csrf": {tok}, "name": {"app/db"}, "confirm": {"app/db"}})
	if p.code != http.StatusSeeOther {
		t.Fatalf("delete: %d\n%s", p.code, p.body)
	}
	list := b.get("/ui/secrets")
	if !strings.Contains(list.body, `id="deleted"`) || !strings.Contains(list.body, `action="/ui/secrets/undelete"`) {
		t.Errorf("the deleted secret is not offered for restoring:\n%s", list.body)
	}
	if p := b.postForm("/ui/secrets/undelete", url.Values{"csrf": {tok}, "name": {"app/db"}}); p.code != http.StatusSeeOther {
		t.Fatalf("undelete: %d\n%s", p.code, p.body)
	}
	if s.current("app/db") != 1 {
		t.Error("undelete did not restore")
	}
	// Purge: also two steps.
	p = b.postForm("/ui/secrets/delete", url.Values{"csrf": {tok}, "name": {"app/db"}, "purge": {"on"}})
	if !strings.Contains(p.body, "cannot be undone") || !strings.Contains(p.body, `name="purge" value="true"`) {
		t.Fatalf("purge step one:\n%s", p.body)
	}
	b.postForm("/ui/secrets/delete", url.Values{"csrf": {tok}, "name": {"app/db"}, "purge": {"true"}, "confirm": {"app/db"}})
	if strings.Contains(b.get("/ui/secrets").body, `href="/ui/secrets/app/db"`) || s.current("app/db") != 0 {
		t.Error("purged secret still listed")
	}
}

func TestBindingsSavePreviewEvaluate(t *testing.T) {
	s := newStack(t, stackOpts{})
	b := s.browser()
	tok := b.login(s.admin)
	put(t, b, tok, "app/db", "binding-test")
	save := url.Values{"csrf": {tok}, "create": {"1"}, "name": {"web-db"}, "secret": {"app/db"}, "selector": {"app=web"}, "mode": {"0440"}, "uid": {"10"}, "gid": {"20"}}
	if p := b.postForm("/ui/bindings/save", save); p.code != http.StatusSeeOther {
		t.Fatalf("save: %d\n%s", p.code, p.body)
	}
	got, err := s.cat.GetBinding(context.Background(), "web-db")
	if err != nil || got.Mode != 0o440 || got.UID != 10 || got.GID != 20 || got.File != "db" {
		t.Fatalf("saved binding %+v %v", got, err)
	}
	// Create-only: the same name again is a conflict, not an overwrite.
	save.Set("selector", "app=other")
	if p := b.postForm("/ui/bindings/save", save); p.code != http.StatusConflict {
		t.Errorf("create over an existing binding: %d\n%s", p.code, p.body)
	}
	for _, c := range []struct{ field, value, msg string }{
		{"mode", "9x", "mode"}, {"uid", "root", "uid"}, {"selector", "", "selector"}, {"name", "", "name:"},
	} {
		f := url.Values{"csrf": {tok}, "create": {"1"}, "name": {"b2"}, "secret": {"app/db"}, "selector": {"app=web"}}
		f.Set(c.field, c.value)
		if p := b.postForm("/ui/bindings/save", f); p.code != http.StatusBadRequest || !strings.Contains(p.body, c.msg) {
			t.Errorf("%s=%q: %d\n%s", c.field, c.value, p.code, p.body)
		}
	}
	edit := b.get("/ui/bindings/edit?name=web-db")
	if !strings.Contains(edit.body, `value="app=web"`) || !strings.Contains(edit.body, `value="0440"`) {
		t.Errorf("edit page:\n%s", edit.body)
	}
	// Edit (replace).
	upd := url.Values{"csrf": {tok}, "create": {"0"}, "name": {"web-db"}, "secret": {"app/db"}, "selector": {"app=api"}}
	if p := b.postForm("/ui/bindings/save", upd); p.code != http.StatusSeeOther {
		t.Fatalf("update: %d\n%s", p.code, p.body)
	}
	// Preview: a dry run, nothing saved.
	p := b.postJSON("/ui/bindings/preview", `{"name":"web-db","secret":"app/db","selector":"app=new","create":"0"}`, tok)
	var pv struct {
		Error  string `json:"error"`
		Change string `json:"change"`
	}
	if err := json.Unmarshal([]byte(p.body), &pv); err != nil || p.code != 200 || pv.Change != "updated" {
		t.Errorf("preview: %d %s", p.code, p.body)
	}
	if got, _ := s.cat.GetBinding(context.Background(), "web-db"); got.Selector != "app=api" {
		t.Errorf("the preview saved: %+v", got)
	}
	p = b.postJSON("/ui/bindings/preview", `{"name":"web-db","secret":"app/db","selector":"app in (","create":"0"}`, tok)
	if json.Unmarshal([]byte(p.body), &pv); pv.Error == "" || !strings.Contains(pv.Error, "selector") {
		t.Errorf("bad selector preview: %s", p.body)
	}
	p = b.postJSON("/ui/bindings/evaluate", `{"labels":"app=api, env=prod"}`, tok)
	var ev struct {
		Granted []struct{ Secret, File string } `json:"granted"`
	}
	if json.Unmarshal([]byte(p.body), &ev); len(ev.Granted) != 1 || ev.Granted[0].Secret != "app/db" {
		t.Errorf("evaluate: %s", p.body)
	}
	p = b.postJSON("/ui/bindings/evaluate", `{"labels":"app"}`, tok)
	if !strings.Contains(p.body, "labels") || !strings.Contains(p.body, "not key=value") {
		t.Errorf("evaluate bad labels: %s", p.body)
	}
	// Delete: confirm first.
	if p := b.postForm("/ui/bindings/delete", url.Values{"csrf": {tok}, "name": {"web-db"}}); !strings.Contains(p.body, `id="confirm-form"`) {
		t.Fatalf("binding delete step one: %d\n%s", p.code, p.body)
	}
	if p := b.postForm("/ui/bindings/delete", url.Values{"csrf": {tok}, "name": {"web-db"}, "confirm": {"web-db"}}); p.code != http.StatusSeeOther {
		t.Fatalf("binding delete: %d\n%s", p.code, p.body)
	}
	if _, err := s.cat.GetBinding(context.Background(), "web-db"); err == nil {
		t.Error("binding not deleted")
	}
}

func TestAuditPage(t *testing.T) {
	s := newStack(t, stackOpts{})
	b := s.browser()
	tok := b.login(s.admin)
	put(t, b, tok, "app/db", "audit-test-value")
	put(t, b, tok, "app/other", "audit-test-value-2")
	p := b.get("/ui/audit?secret=app/db")
	if p.code != http.StatusOK || !strings.Contains(p.body, "secret:app/db") || strings.Contains(p.body, "secret:app/other") {
		t.Fatalf("filtered audit:\n%s", p.body)
	}
	if !strings.Contains(p.body, `href="/ui/audit/export?secret=app%2Fdb"`) {
		t.Errorf("no export link with the filter:\n%s", p.body)
	}
	ex := b.get("/ui/audit/export?secret=app/db")
	var evs []map[string]any
	if err := json.Unmarshal([]byte(ex.body), &evs); err != nil || len(evs) == 0 {
		t.Fatalf("export: %v\n%s", err, ex.body)
	}
	if !strings.Contains(ex.header.Get("Content-Disposition"), "attachment") || evs[0]["hash"] == "" {
		t.Errorf("export headers %v / records %v", ex.header, evs[0])
	}
	v := b.get("/ui/audit/verify?secret=app/db")
	if !strings.Contains(v.body, "Chain verified") || strings.Contains(v.body, "secret:app/other") {
		t.Errorf("verify:\n%s", v.body)
	}
	v = b.get("/ui/audit/verify?head=1:" + strings.Repeat("0", 64))
	if !strings.Contains(v.body, "FAILED") {
		t.Errorf("verify against a wrong head:\n%s", v.body)
	}
	for _, q := range []string{"limit=0", "limit=x", "since=yesterday", "action=secret.rotate"} {
		if p := b.get("/ui/audit?" + q); p.code != http.StatusBadRequest {
			t.Errorf("%s: %d", q, p.code)
		}
	}
	noLeak(t, s, "audit-test-value")
}
