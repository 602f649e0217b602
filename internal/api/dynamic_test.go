package api_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/keystore"
)

const dynamicPassword = "dyn-s3cr3t-password"

// memIssuer issues leases for database/creds/app only.
type memIssuer struct {
	mu     sync.Mutex
	n      int
	live   map[string]bool
	refuse error
}

func (m *memIssuer) ValidateItem(item string) error {
	if !strings.Contains(item, "/") {
		return fmt.Errorf("%w: want a path such as database/creds/app", keystore.ErrInvalidRef)
	}
	return nil
}

func (m *memIssuer) Issue(_ context.Context, item string) (keystore.Lease, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.refuse != nil {
		return keystore.Lease{}, keystore.Errorf("dyn", item, m.refuse, "refused")
	}
	if item != "database/creds/app" {
		return keystore.Lease{}, keystore.Errorf("dyn", item, keystore.ErrInvalidRef, "Vault refused the request (HTTP 400: unknown role)")
	}
	m.n++
	id := fmt.Sprintf("%s/l%d", item, m.n)
	m.live[id] = true
	return keystore.Lease{ID: id, TTL: time.Hour, Renewable: true,
		Value: []byte(fmt.Sprintf(`{"password":"%s-%d","username":"u%d"}`, dynamicPassword, m.n, m.n))}, nil
}

func (m *memIssuer) Renew(context.Context, string, time.Duration) (time.Duration, error) {
	return time.Hour, nil
}

func (m *memIssuer) Revoke(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.live, id)
	return nil
}

func (m *memIssuer) Close() error { return nil }

func (m *memIssuer) liveCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.live)
}

// newDynamicEnv is an API stack on real parts with a lease manager over is.
func newDynamicEnv(t *testing.T, is keystore.Issuer) *env {
	t.Helper()
	return newEnvWith(t, upstreams{issuers: keystore.Issuers{"dyn": is}})
}

func TestLinkDynamic(t *testing.T) {
	is := &memIssuer{live: map[string]bool{}}
	e := newDynamicEnv(t, is)

	// Bad input: 400 naming the upstream and the item; nothing stored.
	for from, want := range map[string]string{
		"dyn:database/creds/nope":      `keystore dyn: item \"database/creds/nope\": invalid keystore reference: Vault refused`,
		"dyn:app":                      "want a path such as database/creds/app",
		"dyn:database/creds/app#nokey": `no such key`,
		"nosuch:database/creds/app":    `upstream \"nosuch\" is not configured`,
	} {
		code, body := e.do(e.admin, "PUT", "/v1/links/payments/db", `{"from":"`+from+`"}`)
		if code != 400 || !strings.Contains(body, want) || strings.Contains(body, dynamicPassword) {
			t.Errorf("%s: %d %s (want %q)", from, code, body, want)
		}
	}
	is.refuse = keystore.ErrUnreachable
	if code, body := e.do(e.admin, "PUT", "/v1/links/payments/db", `{"from":"dyn:database/creds/app"}`); code != 502 {
		t.Errorf("Vault unreachable: %d %s", code, body)
	}
	is.refuse = nil
	var ups []map[string]any
	if code := e.json(e.admin, "GET", "/v1/keystores", nil, &ups); code != 200 || len(ups) != 1 || ups[0]["name"] != "dyn" || ups[0]["state"] != "ok" {
		t.Fatalf("keystores: %d %v", code, ups)
	}
	if code, _ := e.do(e.admin, "GET", "/v1/secrets/payments/db", ""); code != 404 {
		t.Fatal("refused links stored something")
	}
	if is.liveCount() != 0 {
		t.Fatal("probes left leases")
	}

	// A dry run, then the link: dynamic, no versions, the probe's lease revoked.
	var plan map[string]any
	if code := e.json(e.admin, "PUT", "/v1/links/payments/db?dry_run=true", map[string]string{"from": "dyn:database/creds/app"}, &plan); code != 200 || plan["action"] != "link" {
		t.Fatalf("dry run: %d %v", code, plan)
	}
	var meta struct {
		Link struct {
			From    string
			Dynamic bool
		}
		Versions []any
	}
	if code := e.json(e.admin, "PUT", "/v1/links/payments/db", map[string]string{"from": "dyn:database/creds/app"}, &meta); code != 201 || !meta.Link.Dynamic || len(meta.Versions) != 0 {
		t.Fatalf("link: %d %+v", code, meta)
	}
	if is.liveCount() != 0 {
		t.Fatal("the probe's lease is still live")
	}
	var view struct {
		Link       map[string]any `json:"link"`
		LinkStatus map[string]any `json:"link_status"`
		Holders    []any          `json:"holders"`
	}
	if code := e.json(e.admin, "GET", "/v1/secrets/payments/db", nil, &view); code != 200 || view.Link["dynamic"] != true || view.LinkStatus["state"] != "ok" {
		t.Fatalf("show: %d %+v", code, view)
	}
	code, body := e.do(e.admin, "PUT", "/v1/secrets/payments/db", `{"value":"eA=="}`)
	if code != 409 || !strings.Contains(body, "linked to dyn:database/creds/app") {
		t.Fatalf("put on a dynamic secret: %d %s", code, body)
	}
	if code, _ := e.do(e.admin, "DELETE", "/v1/links/payments/db", ""); code != 204 {
		t.Fatal("unlink")
	}
	e.assertNoLeak(dynamicPassword)
}
