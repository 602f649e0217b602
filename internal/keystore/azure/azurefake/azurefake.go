// Package azurefake is an Azure Key Vault server for tests: HTTPS on
// 127.0.0.1, with Key Vault's bearer challenge (a request without a token
// gets 401 and WWW-Authenticate: Bearer authorization=..., resource=...),
// a required api-version, and the documented REST shapes for secrets
// (get, versions, paged list with nextLink, set) and RSA keys (create, get,
// rotate, wrapkey/unwrapkey with RSA-OAEP-256, done with real RSA). No
// emulator can be had for this machine; the tests drive this fake with the
// official azsecrets and azkeys clients and a fake TokenCredential.
package azurefake

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
)

// Tenant is the tenant named in the fake's challenge.
const Tenant = "00000000-0000-0000-0000-00000000c0ff"

// PageSize is how many entries one list page holds (as Key Vault's 25).
const PageSize = 25

// Server is a fake Key Vault.
type Server struct {
	URL string // https://127.0.0.1:PORT
	srv *httptest.Server

	mu      sync.Mutex
	tokens  map[string]bool
	secrets map[string]*fsecret // lower-case name
	keys    map[string]*fkey
	deny    bool
	calls   map[string]int
}

type fsecret struct {
	name     string
	versions []*fversion // last is current
}

type fversion struct {
	id       string
	value    string
	enabled  bool
	created  time.Time
	updated  time.Time
	contentT string
}

type fkey struct {
	name     string
	versions []*fkeyVersion // last is current
}

type fkeyVersion struct {
	id      string
	priv    *rsa.PrivateKey
	created time.Time
}

// New starts a fake that accepts the bearer token token, and stops it at
// the end of the test.
func New(t testing.TB, token string) *Server {
	s := &Server{tokens: map[string]bool{token: true}, secrets: map[string]*fsecret{}, keys: map[string]*fkey{}, calls: map[string]int{}}
	s.srv = httptest.NewTLSServer(http.HandlerFunc(s.serve))
	s.URL = s.srv.URL
	t.Cleanup(s.srv.Close)
	return s
}

// Client is an HTTP client that trusts the fake's certificate.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// CertPEM is the fake's certificate, for a ca_file.
func (s *Server) CertPEM() []byte {
	return pemCert(s.srv.Certificate().Raw)
}

// SetToken replaces the accepted bearer tokens with token ("" accepts none).
func (s *Server) SetToken(token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens = map[string]bool{}
	if token != "" {
		s.tokens[token] = true
	}
}

// Deny makes every authorized request fail with 403 ForbiddenByRbac.
func (s *Server) Deny(deny bool) { s.mu.Lock(); s.deny = deny; s.mu.Unlock() }

// Calls returns how many requests of a kind ("get", "list", "wrap", ...) were served.
func (s *Server) Calls(kind string) int { s.mu.Lock(); defer s.mu.Unlock(); return s.calls[kind] }

// SetSecret adds a new current version of name holding value.
func (s *Server) SetSecret(name, value string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.setSecret(name, value, "")
}

func (s *Server) setSecret(name, value, contentType string) string {
	sec := s.secrets[strings.ToLower(name)]
	if sec == nil {
		sec = &fsecret{name: name}
		s.secrets[strings.ToLower(name)] = sec
	}
	now := time.Now()
	v := &fversion{id: randHex(16), value: value, enabled: true, created: now, updated: now, contentT: contentType}
	sec.versions = append(sec.versions, v)
	return v.id
}

// SetUpdated moves the current version's updated time (to test the
// one-second resolution of attributes.updated).
func (s *Server) SetUpdated(name string, t time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec := s.secrets[strings.ToLower(name)]; sec != nil {
		sec.versions[len(sec.versions)-1].updated = t
	}
}

// Disable disables (or enables) the current version of name.
func (s *Server) Disable(name string, disabled bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sec := s.secrets[strings.ToLower(name)]; sec != nil {
		v := sec.versions[len(sec.versions)-1]
		v.enabled, v.updated = !disabled, time.Now()
	}
}

// DeleteSecret deletes name (soft delete: it is gone from gets and lists).
func (s *Server) DeleteSecret(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.secrets, strings.ToLower(name))
}

// CreateKey creates an RSA key, or a new version of it (a rotation).
func (s *Server) CreateKey(name string) string {
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[strings.ToLower(name)]
	if k == nil {
		k = &fkey{name: name}
		s.keys[strings.ToLower(name)] = k
	}
	v := &fkeyVersion{id: randHex(16), priv: priv, created: time.Now()}
	k.versions = append(k.versions, v)
	return v.id
}

// DeleteKey deletes a key.
func (s *Server) DeleteKey(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.keys, strings.ToLower(name))
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("api-version") == "" {
		kvError(w, 400, "BadParameter", "", "The api-version query parameter is required")
		return
	}
	auth := r.Header.Get("Authorization")
	s.mu.Lock()
	ok := strings.HasPrefix(auth, "Bearer ") && s.tokens[strings.TrimPrefix(auth, "Bearer ")]
	deny := s.deny
	s.mu.Unlock()
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer authorization="https://login.microsoftonline.com/`+Tenant+`", resource="https://vault.azure.net"`)
		kvError(w, 401, "Unauthorized", "", "AKV10000: Request is missing a Bearer or PoP token.")
		return
	}
	if deny {
		kvError(w, 403, "Forbidden", "ForbiddenByRbac", "Caller is not authorized to perform action on resource.")
		return
	}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case len(parts) == 1 && parts[0] == "secrets" && r.Method == http.MethodGet:
		s.calls["list"]++
		s.listSecrets(w, r)
	case len(parts) == 2 && parts[0] == "secrets" && r.Method == http.MethodPut:
		var in struct {
			Value       string `json:"value"`
			ContentType string `json:"contentType"`
		}
		if json.NewDecoder(io.LimitReader(r.Body, 32<<20)).Decode(&in) != nil {
			kvError(w, 400, "BadParameter", "", "bad body")
			return
		}
		s.setSecret(parts[1], in.Value, in.ContentType)
		sec := s.secrets[strings.ToLower(parts[1])]
		reply(w, s.bundle(r, sec, sec.versions[len(sec.versions)-1]))
	case (len(parts) == 2 || len(parts) == 3) && parts[0] == "secrets" && r.Method == http.MethodGet:
		if len(parts) == 3 && parts[2] == "versions" {
			s.calls["versions"]++
			s.listVersions(w, r, parts[1])
			return
		}
		s.calls["get"]++
		ver := ""
		if len(parts) == 3 {
			ver = parts[2]
		}
		s.getSecret(w, r, parts[1], ver)
	case parts[0] == "keys":
		s.serveKeys(w, r, parts[1:])
	default:
		kvError(w, 404, "NotFound", "", "no such route in the fake: "+r.Method+" "+r.URL.Path)
	}
}

func (s *Server) getSecret(w http.ResponseWriter, r *http.Request, name, ver string) {
	sec := s.secrets[strings.ToLower(name)]
	if sec == nil {
		kvError(w, 404, "SecretNotFound", "", "A secret with (name/id) "+name+" was not found in this key vault.")
		return
	}
	v := sec.versions[len(sec.versions)-1]
	if ver != "" {
		v = nil
		for _, x := range sec.versions {
			if x.id == ver {
				v = x
			}
		}
		if v == nil {
			kvError(w, 404, "SecretNotFound", "", "A secret with (name/id) "+name+"/"+ver+" was not found in this key vault.")
			return
		}
	}
	if !v.enabled {
		kvError(w, 403, "Forbidden", "SecretDisabled", "Operation get is not allowed on a disabled secret.")
		return
	}
	reply(w, s.bundle(r, sec, v))
}

func (s *Server) bundle(r *http.Request, sec *fsecret, v *fversion) map[string]any {
	b := map[string]any{
		"value":      v.value,
		"id":         "https://" + r.Host + "/secrets/" + sec.name + "/" + v.id,
		"attributes": attributes(v.enabled, v.created, v.updated),
		"tags":       map[string]string{},
	}
	if v.contentT != "" {
		b["contentType"] = v.contentT
	}
	return b
}

func attributes(enabled bool, created, updated time.Time) map[string]any {
	return map[string]any{"enabled": enabled, "created": created.Unix(), "updated": updated.Unix(),
		"recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90}
}

// listSecrets serves GET /secrets, PageSize per page, with a nextLink
// carrying $skiptoken as Key Vault does.
func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request) {
	names := make([]string, 0, len(s.secrets))
	for n := range s.secrets {
		names = append(names, n)
	}
	sort.Strings(names)
	start, _ := strconv.Atoi(r.URL.Query().Get("$skiptoken"))
	start = min(max(start, 0), len(names))
	end := min(start+PageSize, len(names))
	list := []map[string]any{}
	for _, n := range names[start:end] {
		sec := s.secrets[n]
		v := sec.versions[len(sec.versions)-1]
		list = append(list, map[string]any{"id": "https://" + r.Host + "/secrets/" + sec.name,
			"attributes": attributes(v.enabled, v.created, v.updated), "tags": map[string]string{}})
	}
	out := map[string]any{"value": list, "nextLink": nil}
	if end < len(names) {
		out["nextLink"] = "https://" + r.Host + "/secrets?api-version=" + r.URL.Query().Get("api-version") +
			"&$skiptoken=" + strconv.Itoa(end)
	}
	reply(w, out)
}

func (s *Server) listVersions(w http.ResponseWriter, r *http.Request, name string) {
	sec := s.secrets[strings.ToLower(name)]
	if sec == nil {
		kvError(w, 404, "SecretNotFound", "", "A secret with (name/id) "+name+" was not found in this key vault.")
		return
	}
	list := []map[string]any{}
	for _, v := range sec.versions {
		list = append(list, map[string]any{"id": "https://" + r.Host + "/secrets/" + sec.name + "/" + v.id,
			"attributes": attributes(v.enabled, v.created, v.updated)})
	}
	reply(w, map[string]any{"value": list, "nextLink": nil})
}

// serveKeys serves /keys/{name}/create, /keys/{name}[/{version}],
// /keys/{name}/rotate and /keys/{name}/{version}/wrapkey|unwrapkey.
func (s *Server) serveKeys(w http.ResponseWriter, r *http.Request, p []string) {
	if len(p) == 0 {
		kvError(w, 404, "NotFound", "", "no key name")
		return
	}
	name := p[0]
	if len(p) == 2 && (p[1] == "create" || p[1] == "rotate") && r.Method == http.MethodPost {
		s.mu.Unlock()
		s.CreateKey(name)
		s.mu.Lock()
		k := s.keys[strings.ToLower(name)]
		reply(w, keyBundle(r, k, k.versions[len(k.versions)-1]))
		return
	}
	k := s.keys[strings.ToLower(name)]
	if k == nil {
		kvError(w, 404, "KeyNotFound", "", "A key with (name/id) "+name+" was not found in this key vault.")
		return
	}
	v := k.versions[len(k.versions)-1]
	op := ""
	switch {
	case len(p) == 1 || (len(p) == 2 && p[1] == ""):
	case len(p) == 2 && (p[1] == "wrapkey" || p[1] == "unwrapkey"):
		op = p[1]
	case len(p) >= 2:
		v = nil
		for _, x := range k.versions {
			if x.id == p[1] {
				v = x
			}
		}
		if v == nil {
			kvError(w, 404, "KeyNotFound", "", "A key with (name/id) "+name+"/"+p[1]+" was not found in this key vault.")
			return
		}
		if len(p) == 3 {
			op = p[2]
		}
	}
	switch {
	case op == "" && r.Method == http.MethodGet:
		reply(w, keyBundle(r, k, v))
	case op == "wrapkey" || op == "unwrapkey":
		s.calls[op]++
		var in struct {
			Alg   string `json:"alg"`
			Value string `json:"value"`
		}
		if json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&in) != nil {
			kvError(w, 400, "BadParameter", "", "bad body")
			return
		}
		if in.Alg != "RSA-OAEP-256" {
			kvError(w, 400, "BadParameter", "", "the fake supports RSA-OAEP-256 only")
			return
		}
		data, err := b64(in.Value)
		if err != nil {
			kvError(w, 400, "BadParameter", "", "value is not base64url")
			return
		}
		var res []byte
		if op == "wrapkey" {
			res, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, &v.priv.PublicKey, data, nil)
		} else {
			res, err = rsa.DecryptOAEP(sha256.New(), nil, v.priv, data, nil)
		}
		if err != nil {
			kvError(w, 400, "BadParameter", "", "Error while "+op+"ping: the ciphertext could not be decrypted with this key")
			return
		}
		reply(w, map[string]any{"kid": "https://" + r.Host + "/keys/" + k.name + "/" + v.id, "value": base64.RawURLEncoding.EncodeToString(res)})
	default:
		kvError(w, 404, "NotFound", "", "no such key operation in the fake")
	}
}

func keyBundle(r *http.Request, k *fkey, v *fkeyVersion) map[string]any {
	return map[string]any{
		"key": map[string]any{
			"kid": "https://" + r.Host + "/keys/" + k.name + "/" + v.id, "kty": "RSA",
			"key_ops": []string{"wrapKey", "unwrapKey", "encrypt", "decrypt"},
			"n":       base64.RawURLEncoding.EncodeToString(v.priv.N.Bytes()),
			"e":       base64.RawURLEncoding.EncodeToString(big.NewInt(int64(v.priv.E)).Bytes()),
		},
		"attributes": attributes(true, v.created, v.created),
	}
}

func b64(s string) ([]byte, error) {
	if b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "=")); err == nil {
		return b, nil
	}
	return base64.StdEncoding.DecodeString(s)
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_ = json.NewEncoder(w).Encode(v)
}

func kvError(w http.ResponseWriter, status int, code, inner, msg string) {
	e := map[string]any{"code": code, "message": msg}
	if inner != "" {
		e["innererror"] = map[string]any{"code": inner}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"error": e})
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Credential is a fake azcore.TokenCredential handing out Token for Key
// Vault's scope, or Err.
type Credential struct {
	mu    sync.Mutex
	Token string
	Err   error
	calls int
}

// GetToken implements azcore.TokenCredential.
func (c *Credential) GetToken(_ context.Context, o policy.TokenRequestOptions) (azcore.AccessToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls++
	if c.Err != nil {
		return azcore.AccessToken{}, c.Err
	}
	if len(o.Scopes) != 1 || o.Scopes[0] != "https://vault.azure.net/.default" {
		return azcore.AccessToken{}, &scopeError{o.Scopes}
	}
	return azcore.AccessToken{Token: c.Token, ExpiresOn: time.Now().Add(time.Hour)}, nil
}

// Calls returns how many tokens were asked for.
func (c *Credential) Calls() int { c.mu.Lock(); defer c.mu.Unlock(); return c.calls }

type scopeError struct{ scopes []string }

func (e *scopeError) Error() string {
	return "fake credential: unexpected scopes " + strings.Join(e.scopes, ",")
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
