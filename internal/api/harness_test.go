package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"coffer/internal/api"
	"coffer/internal/audit"
	"coffer/internal/authn"
	"coffer/internal/authz"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/fleet"
	"coffer/internal/identity"
	"coffer/internal/incident"
	"coffer/internal/keystore"
	"coffer/internal/lease"
	"coffer/internal/linker"
	"coffer/internal/seal"
	"coffer/internal/store/bolt"
	"coffer/test/testkit"
)

// env is a full API stack on real parts (bbolt, seal, audit file) in a temp dir.
type env struct {
	t      *testing.T
	dir    string
	srv    *httptest.Server
	h      http.Handler // srv's handler (spec-checked), for requests from chosen addresses
	admin  string
	tokens *authn.Tokens
	audit  *audit.Log
	logs   *testkit.Buffer

	mu        sync.Mutex
	responses bytes.Buffer // every response body, for leak checks
}

func newEnv(t *testing.T, opts ...func(*api.Config)) *env {
	t.Helper()
	return newEnvWith(t, upstreams{}, opts...)
}

// upstreams are the keystores (for linked secrets) and issuers (for
// dynamic ones) an env's server brokers.
type upstreams struct {
	keystores keystore.Set
	issuers   keystore.Issuers
}

// newEnvWith is newEnv with upstreams: the linker running over the
// keystores (polling every second), a lease manager over the issuers.
func newEnvWith(t *testing.T, up upstreams, opts ...func(*api.Config)) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	logs := &testkit.Buffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st, err := bolt.Open(filepath.Join(dir, "coffer.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	key, err := seal.CreateKeyFile(filepath.Join(dir, "master.key"))
	if err != nil {
		t.Fatal(err)
	}
	ca, _, err := identity.LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	alog, err := audit.Open(filepath.Join(dir, "audit.log"), audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { alog.Close() })
	aud := alog
	tokens, err := authn.NewTokens(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	fl, err := fleet.Open(ctx, fleet.Config{Store: st, CA: ca})
	if err != nil {
		t.Fatal(err)
	}
	var b *broker.Broker
	var lk *linker.Linker
	var lm *lease.Manager
	cat, err := catalog.Open(ctx, catalog.Config{Store: st, Key: key, Logger: log, MaxValueSize: 1 << 20, OnChange: func(c catalog.Change) {
		if lm != nil {
			lm.Changed(c) // first: the broker asks it which secrets are dynamic
		}
		b.Changed(c)
		if lk != nil {
			lk.Changed(c)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	bcfg := broker.Config{Catalog: cat, Audit: aud, Agents: fl, Logger: log}
	var dynamic api.DynamicLinker
	if up.issuers != nil {
		lm = lease.New(lease.Config{Issuers: up.issuers, Catalog: cat, Audit: aud, Logger: log, Store: st})
		if err := lm.Load(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { lm.Close(context.Background()) })
		bcfg.Leases, dynamic = lm, lm
	}
	b = broker.New(bcfg)
	if lm != nil {
		lm.SetNotify(b.LeaseChanged)
	}
	var links api.Linker
	if ks := up.keystores; ks != nil {
		intervals := map[string]time.Duration{}
		for name := range ks {
			intervals[name] = time.Second
		}
		lk = linker.New(linker.Config{Keystores: ks, Catalog: cat, Audit: aud, Logger: log, Intervals: intervals})
		links = lk
		lctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { lk.Run(lctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	inc, err := incident.Open(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	cfg := api.Config{Catalog: cat, Tokens: tokens, Fleet: fl, Broker: b, Audit: aud, CAPEM: ca.CertPEM, Logger: log, Links: links, Incident: inc, Dynamic: dynamic}
	for _, o := range opts {
		o(&cfg)
	}
	h := api.New(cfg)
	// Every response is checked against openapi.yaml (openapi_check_test.go).
	checked := specCheck(t, h)
	srv := httptest.NewServer(checked)
	t.Cleanup(srv.Close)
	admin, _, err := tokens.Create(ctx, authn.CreateOptions{Role: authz.Admin, CreatedBy: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return &env{t: t, dir: dir, srv: srv, h: checked, admin: admin, tokens: tokens, audit: alog, logs: logs}
}

// token makes a token of a role and scope.
func (e *env) token(role authz.Role, scope string) string {
	e.t.Helper()
	plain, _, err := e.tokens.Create(context.Background(), authn.CreateOptions{Role: role, Scope: scope})
	if err != nil {
		e.t.Fatal(err)
	}
	return plain
}

// do sends a request with a raw body and returns status and body.
func (e *env) do(token, method, path string, body string) (int, string) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	e.mu.Lock()
	e.responses.Write(b)
	e.mu.Unlock()
	return resp.StatusCode, string(b)
}

// json sends v as JSON and decodes the answer into out (if not nil).
func (e *env) json(token, method, path string, v, out any) int {
	e.t.Helper()
	body := ""
	if v != nil {
		b, _ := json.Marshal(v)
		body = string(b)
	}
	code, resp := e.do(token, method, path, body)
	if out != nil && code < 300 {
		if err := json.Unmarshal([]byte(resp), out); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, path, err, resp)
		}
	}
	return code
}

// assertNoLeak fails if v (or its base64) is in any response, log line or
// file of the data dir (the audit trail among them).
func (e *env) assertNoLeak(v string) {
	e.t.Helper()
	var disk strings.Builder
	filepath.Walk(e.dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			disk.Write(b)
		}
		return nil
	})
	e.mu.Lock()
	resp := e.responses.String()
	e.mu.Unlock()
	enc := base64.StdEncoding.EncodeToString([]byte(v))
	for where, text := range map[string]string{"data dir": disk.String(), "responses": resp, "logs": e.logs.String()} {
		if strings.Contains(text, v) || strings.Contains(text, enc) {
			e.t.Errorf("value found in %s", where)
		}
	}
}
