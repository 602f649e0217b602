package api_test

import (
	"fmt"
	"net/url"
	"strings"
	"testing"

	"coffer/internal/audit"
	"coffer/internal/authz"
)

func TestAuditHeadAndVerifyThroughIt(t *testing.T) {
	e := newEnv(t)
	auditor := e.token(authz.Auditor, "")
	e.do(e.admin, "GET", "/v1/secrets", "")
	var h audit.Head
	if code := e.json(auditor, "GET", "/v1/audit/head", nil, &h); code != 200 || h.Seq == 0 || len(h.Hash) != 64 {
		t.Fatalf("head: %d %+v", code, h)
	}
	if h.Seq >= e.audit.Head().Seq || h.Seq < 1 {
		t.Fatalf("head %+v, log head %+v", h, e.audit.Head())
	}
	// The audit.head call itself is recorded.
	var evs []audit.Event
	e.json(e.admin, "GET", "/v1/audit?action=audit.head", nil, &evs)
	if len(evs) != 1 || evs[0].Actor == "" {
		t.Fatalf("audit.head records: %+v", evs)
	}

	var v map[string]any
	for _, head := range []string{h.String(), fmt.Sprintf(`{"seq":%d,"hash":"%s"}`, h.Seq, h.Hash)} {
		if code := e.json(auditor, "GET", "/v1/audit/verify?head="+url.QueryEscape(head), nil, &v); code != 200 || v["ok"] != true {
			t.Fatalf("verify through %s: %d %v", head, code, v)
		}
	}
	other := audit.Head{Seq: h.Seq, Hash: strings.Repeat("0", 64)}
	if code := e.json(auditor, "GET", "/v1/audit/verify?head="+other.String(), nil, &v); code != 200 || v["ok"] != false || !strings.Contains(v["error"].(string), "rewritten") {
		t.Fatalf("verify through another head: %d %v", code, v)
	}
	future := audit.Head{Seq: 1 << 40, Hash: h.Hash}
	if code := e.json(auditor, "GET", "/v1/audit/verify?head="+future.String(), nil, &v); code != 200 || v["ok"] != false || !strings.Contains(v["error"].(string), "before the given head") {
		t.Fatalf("verify through a later head: %d %v", code, v)
	}
	for _, bad := range []string{"x", "0:" + h.Hash, "5:abc"} {
		code, body := e.do(auditor, "GET", "/v1/audit/verify?head="+url.QueryEscape(bad), "")
		if code != 400 || !strings.Contains(body, "head:") {
			t.Errorf("head %q: %d %s", bad, code, body)
		}
	}
	viewer := e.token(authz.Viewer, "")
	if code, _ := e.do(viewer, "GET", "/v1/audit/head", ""); code != 403 {
		t.Fatalf("viewer reads the head: %d", code)
	}
}
