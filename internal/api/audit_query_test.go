package api_test

import (
	"fmt"
	"strings"
	"testing"

	"coffer/internal/audit"
	"coffer/internal/authz"
)

// Audit queries answer exactly what was asked: a scoped auditor's limit
// counts only the records it may see, unknown parameters and guessed action
// names are refused, and until/result/prefix/paging filter as documented.
func TestAuditQueries(t *testing.T) {
	e := newEnv(t)
	for i := range 3 {
		e.do(e.admin, "PUT", "/v1/secrets/payments/db", fmt.Sprintf(`{"value":"%s"}`, b64(fmt.Sprint("p", i))))
		e.do(e.admin, "PUT", "/v1/secrets/shop/db", fmt.Sprintf(`{"value":"%s"}`, b64(fmt.Sprint("s", i))))
	}
	scoped := e.token(authz.Auditor, "payments/*")
	var evs []audit.Event
	// Before: the limit was applied before the scope filter, so 5 gave 2.
	if code := e.json(scoped, "GET", "/v1/audit?action=secret.put&limit=2", nil, &evs); code != 200 || len(evs) != 2 {
		t.Fatalf("scoped auditor, limit 2: %d, %d records", code, len(evs))
	}
	for _, ev := range evs {
		if ev.Object != "secret:payments/db" {
			t.Fatalf("scoped auditor sees %s", ev.Object)
		}
	}
	e.json(scoped, "GET", "/v1/audit?action=secret.put&limit=5", nil, &evs)
	if len(evs) != 3 {
		t.Fatalf("scoped auditor, limit 5: %d records, want its 3", len(evs))
	}

	for q, want := range map[string]string{
		"result=denied&bogus=1": `unknown query parameter \"bogus\"`,
		"resul=denied":          `unknown query parameter \"resul\"`,
		"action=secret.rm":      `did you mean \"secret.delete\"`,
		"limit=-3":              "limit",
		"after=x":               "after",
		"since=1h&until=2h":     "until must be after since",
		"until=yesterday":       "until",
		"action=a&action=b":     "given 2 times",
	} {
		code, body := e.do(e.admin, "GET", "/v1/audit?"+q, "")
		if code != 400 || !strings.Contains(body, want) {
			t.Errorf("?%s: %d %s, want 400 with %q", q, code, body, want)
		}
	}

	var all []audit.Event
	e.json(e.admin, "GET", "/v1/audit?action=secret.*", nil, &all)
	if len(all) != 6 {
		t.Fatalf("action prefix secret.*: %d records, want 6 puts", len(all))
	}
	e.json(e.admin, "GET", "/v1/audit?result=ok&object=secret:shop/*", nil, &evs)
	if len(evs) != 3 {
		t.Fatalf("result=ok, object prefix: %d records", len(evs))
	}
	// Paging back and following forward by seq.
	mid := all[3].Seq
	e.json(e.admin, "GET", fmt.Sprintf("/v1/audit?action=secret.put&before=%d&limit=2", mid), nil, &evs)
	if len(evs) != 2 || evs[1].Seq >= mid || evs[0].Seq != all[1].Seq {
		t.Fatalf("before %d limit 2: %+v", mid, evs)
	}
	e.json(e.admin, "GET", fmt.Sprintf("/v1/audit?action=secret.put&after=%d", mid), nil, &evs)
	if len(evs) != 2 || evs[0].Seq != all[4].Seq {
		t.Fatalf("after %d: %+v", mid, evs)
	}
	e.json(e.admin, "GET", "/v1/audit?until=2000-01-01T00:00:00Z", nil, &evs)
	if len(evs) != 0 {
		t.Fatalf("until 2000: %d records", len(evs))
	}
}
