// Package conjurfake is a CyberArk Conjur server for tests: HTTPS on
// 127.0.0.1 with Conjur's API-key login (POST /authn/{account}/{login}/
// authenticate returns a JSON access token {"protected","payload",
// "signature"} whose payload has iat and exp; later requests carry
// Authorization: Token token="<base64 of it>"), secrets by variable id and
// version, and resources with their secrets' versions, paged with
// limit/offset. Real Conjur needs Ruby gems and PostgreSQL that cannot be
// had here; the tests drive this fake with the official conjur-api-go
// client.
package conjurfake

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Server is a fake Conjur.
type Server struct {
	URL     string
	Account string
	srv     *httptest.Server

	mu     sync.Mutex
	logins map[string]string // login -> API key
	tokens map[string]time.Time
	vars   map[string]*variable // by id (without account:variable:)
	denied map[string]bool      // ids whose secrets the host may not read
	calls  map[string]int
}

type variable struct {
	versions [][]byte // index = version-1; Conjur keeps the last 20
}

// New starts a fake for account with one host login and its API key.
func New(t testing.TB, account, login, apiKey string) *Server {
	s := &Server{Account: account, logins: map[string]string{login: apiKey}, tokens: map[string]time.Time{},
		vars: map[string]*variable{}, denied: map[string]bool{}, calls: map[string]int{}}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// CertPEM is the fake's certificate, for a ca_file.
func (s *Server) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// AddSecret adds a new version to the variable id (creating it).
func (s *Server) AddSecret(id string, value []byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.vars[id]
	if v == nil {
		v = &variable{}
		s.vars[id] = v
	}
	v.versions = append(v.versions, append([]byte(nil), value...))
	return len(v.versions)
}

// DeleteVariable removes a variable (as a policy update removing it does).
func (s *Server) DeleteVariable(id string) { s.mu.Lock(); delete(s.vars, id); s.mu.Unlock() }

// Deny takes the host's execute privilege on id away (or gives it back).
func (s *Server) Deny(id string, deny bool) { s.mu.Lock(); s.denied[id] = deny; s.mu.Unlock() }

// SetAPIKey rotates a login's API key and invalidates the access tokens
// issued so far (as deleting and re-creating the host would).
func (s *Server) SetAPIKey(login, key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logins[login] = key
	clear(s.tokens)
}

// Calls returns how many requests of a kind ("authenticate", "secret",
// "resource", "resources") were served.
func (s *Server) Calls(kind string) int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls[kind] }

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	segs := strings.Split(strings.Trim(r.URL.EscapedPath(), "/"), "/")
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(segs) == 4 && segs[0] == "authn" && segs[3] == "authenticate" && r.Method == http.MethodPost:
		s.calls["authenticate"]++
		s.authenticate(w, r, segs)
		return
	case !s.authorized(r):
		cerror(w, 401, "unauthorized", "Authorization missing or invalid")
		return
	}
	switch {
	case len(segs) == 4 && segs[0] == "secrets" && segs[2] == "variable" && r.Method == http.MethodGet:
		s.calls["secret"]++
		id, err := url.PathUnescape(segs[3])
		if err != nil || segs[1] != s.Account {
			cerror(w, 404, "not_found", "no such variable")
			return
		}
		s.secret(w, r, id)
	case len(segs) == 4 && segs[0] == "resources" && segs[2] == "variable" && r.Method == http.MethodGet:
		s.calls["resource"]++
		id, err := url.QueryUnescape(segs[3])
		v := s.vars[id]
		if err != nil || segs[1] != s.Account || v == nil {
			cerror(w, 404, "not_found", "Variable '"+id+"' not found in account '"+segs[1]+"'")
			return
		}
		reply(w, s.resourceJSON(id, v))
	case len(segs) == 2 && segs[0] == "resources" && r.Method == http.MethodGet:
		s.calls["resources"]++
		s.resources(w, r)
	default:
		cerror(w, 404, "not_found", "no such route in the fake")
	}
}

func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, segs []string) {
	login, err := url.PathUnescape(segs[2])
	if err != nil {
		login = ""
	}
	if l2, err := url.QueryUnescape(segs[2]); err == nil && login == "" {
		login = l2
	}
	key, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
	want, ok := s.logins[login]
	if segs[1] != s.Account || !ok || string(key) != want {
		cerror(w, 401, "unauthorized", "Authentication failed")
		return
	}
	now := time.Now()
	enc := base64.StdEncoding.EncodeToString
	payload, _ := json.Marshal(map[string]any{"sub": login, "iat": now.Unix(), "exp": now.Add(8 * time.Minute).Unix()})
	tok, _ := json.Marshal(map[string]string{
		"protected": enc([]byte(`{"alg":"conjur.org/slosilo/v2","kid":"fake"}`)),
		"payload":   enc(payload),
		"signature": enc([]byte(randHex(32))),
	})
	s.tokens[string(tok)] = now.Add(8 * time.Minute)
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(tok)
}

func (s *Server) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	b64, ok := strings.CutPrefix(h, `Token token="`)
	if !ok || !strings.HasSuffix(b64, `"`) {
		return false
	}
	tok, err := base64.StdEncoding.DecodeString(strings.TrimSuffix(b64, `"`))
	if err != nil {
		return false
	}
	exp, ok := s.tokens[string(tok)]
	return ok && time.Now().Before(exp)
}

func (s *Server) secret(w http.ResponseWriter, r *http.Request, id string) {
	v := s.vars[id]
	if v == nil {
		cerror(w, 404, "not_found", "Variable '"+id+"' not found in account '"+s.Account+"'")
		return
	}
	if s.denied[id] {
		cerror(w, 403, "forbidden", "Forbidden")
		return
	}
	n := len(v.versions)
	if q := r.URL.Query().Get("version"); q != "" {
		var err error
		if n, err = strconv.Atoi(q); err != nil || n < 1 || n > len(v.versions) {
			cerror(w, 404, "not_found", "Requested version does not exist")
			return
		}
	}
	if n == 0 {
		cerror(w, 404, "not_found", "Variable '"+id+"' is empty or not found.")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	_, _ = w.Write(v.versions[n-1])
}

func (s *Server) resourceJSON(id string, v *variable) map[string]any {
	var secrets []map[string]any
	first := max(1, len(v.versions)-19) // the last 20 versions
	for n := first; n <= len(v.versions); n++ {
		secrets = append(secrets, map[string]any{"version": n, "expires_at": nil})
	}
	return map[string]any{
		"created_at": "2026-01-01T00:00:00.000+00:00", "id": s.Account + ":variable:" + id,
		"owner": s.Account + ":policy:root", "policy": s.Account + ":policy:root",
		"permissions": []any{}, "annotations": []any{}, "secrets": secrets,
	}
}

func (s *Server) resources(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if kind := q.Get("kind"); kind != "" && kind != "variable" {
		reply(w, []any{})
		return
	}
	ids := make([]string, 0, len(s.vars))
	for id := range s.vars {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	limit, _ := strconv.Atoi(q.Get("limit"))
	if limit > 1000 {
		cerror(w, 422, "unprocessable_entity", "limit is larger than the maximum 1000")
		return
	}
	if limit <= 0 {
		limit = 1000
	}
	offset, _ := strconv.Atoi(q.Get("offset"))
	offset = min(max(offset, 0), len(ids))
	end := min(offset+limit, len(ids))
	out := []any{}
	for _, id := range ids[offset:end] {
		out = append(out, s.resourceJSON(id, s.vars[id]))
	}
	reply(w, out)
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

func cerror(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
