// Package api is the server's HTTP surface: the REST/JSON admin API under
// /v1/ (write-only for secret values), enrollment of agents, health,
// readiness and metrics. It is the one place where errors become status
// codes, and every request that touches state or metadata is audited before
// its response is sent.
package api

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"coffer/internal/audit"
	"coffer/internal/authn"
	"coffer/internal/authz"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/fleet"
	"coffer/internal/incident"
	"coffer/internal/policy"
	"coffer/internal/secret"
	"coffer/internal/store"
)

//go:embed openapi.yaml
var openapiDoc []byte

// Auditor is where request records go.
type Auditor interface {
	Append(ctx context.Context, e audit.Event) (audit.Event, error)
	Query(ctx context.Context, f audit.Filter) ([]audit.Event, error)
	// Verify checks the trail up to its head and, if through is not nil,
	// that it contains *through.
	Verify(ctx context.Context, through *audit.Head) (audit.Head, error)
	Head() audit.Head
}

// Config wires the API to the server's parts.
type Config struct {
	Catalog      *catalog.Catalog
	Tokens       *authn.Tokens
	Fleet        *fleet.Fleet
	Broker       *broker.Broker
	Audit        Auditor
	CAPEM        []byte
	MaxValueSize int
	Logger       *slog.Logger
	// AuditServers lists the audit chains of an installation whose servers
	// share a store (GET /v1/audit/servers); nil: one server, this one.
	AuditServers func(context.Context) ([]AuditServer, error)
	// Cluster, on servers sharing a store, tells of the agents connected
	// to the other servers (rollout state, agent ls); nil: one server.
	Cluster Cluster
	// GRPC, if set, serves requests with an application/grpc content type
	// (the agents' channel) on the same listener.
	GRPC http.Handler
	// Ready reports whether the server can serve (store and audit usable).
	Ready func(context.Context) error
	// Links resolves links to upstream keystores and reports their
	// health; nil on a server without keystores.
	Links Linker
	// Incident is the lockdown state; nil: no lockdown possible (tests).
	Incident *incident.State
	// Dynamic links secrets to upstreams that issue credentials per
	// container (type vault-dynamic); nil on a server without any.
	Dynamic DynamicLinker
	// Login, if set, enables directory logins (POST /v1/login).
	Login *Login
	// Attest, if set, enrolls Kubernetes nodes' agents by their projected
	// ServiceAccount tokens (POST /v1/enroll with k8s_token).
	Attest *NodeAttestation
}

// Server is the HTTP handler.
type Server struct {
	cfg      Config
	log      *slog.Logger
	mux      *http.ServeMux
	throttle *throttle
	users    *throttle // failed logins per user
}

// New builds the handler.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxValueSize <= 0 {
		cfg.MaxValueSize = 1 << 20
	}
	s := &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), throttle: newThrottle(5, time.Minute), users: newThrottle(5, time.Minute)}
	m := s.mux
	m.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	m.HandleFunc("GET /readyz", s.readyz)
	m.Handle("GET /metrics", promhttp.Handler())
	m.HandleFunc("GET /v1/openapi.yaml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Write(openapiDoc)
	})

	m.HandleFunc("GET /v1/secrets", s.authed("secret.list", authz.SecretRead, s.listSecrets))
	m.HandleFunc("GET /v1/secrets/{name...}", s.authed("secret.show", authz.SecretRead, s.showSecret))
	m.HandleFunc("PUT /v1/secrets/{name...}", s.authed("secret.put", authz.SecretWrite, s.putSecret))
	m.HandleFunc("DELETE /v1/secrets/{name...}", s.authed("secret.delete", authz.SecretWrite, s.deleteSecret))
	m.HandleFunc("POST /v1/rollback/{name...}", s.authed("secret.rollback", authz.SecretWrite, s.rollbackSecret))
	m.HandleFunc("POST /v1/undelete/{name...}", s.authed("secret.undelete", authz.SecretWrite, s.undeleteSecret))
	m.HandleFunc("PUT /v1/links/{name...}", s.authed("secret.link", authz.SecretWrite, s.linkSecret))
	m.HandleFunc("DELETE /v1/links/{name...}", s.authed("secret.unlink", authz.SecretWrite, s.unlinkSecret))
	m.HandleFunc("PUT /v1/templates/{name...}", s.authed("secret.template", authz.SecretWrite, s.putTemplate))
	m.HandleFunc("GET /v1/keystores", s.authed("keystore.list", authz.SecretRead, s.listKeystores))

	m.HandleFunc("GET /v1/bindings", s.authed("binding.list", authz.BindingRead, s.listBindings))
	m.HandleFunc("GET /v1/bindings/{name...}", s.authed("binding.show", authz.BindingRead, s.showBinding))
	m.HandleFunc("PUT /v1/bindings/{name...}", s.authed("binding.put", authz.BindingWrite, s.putBinding))
	m.HandleFunc("DELETE /v1/bindings/{name...}", s.authed("binding.delete", authz.BindingWrite, s.deleteBinding))
	m.HandleFunc("POST /v1/evaluate", s.authed("binding.evaluate", authz.BindingRead, s.evaluate))
	m.HandleFunc("POST /v1/apply", s.authed("binding.apply", authz.BindingWrite, s.applyBindings))

	m.HandleFunc("GET /v1/tokens", s.authed("token.list", authz.TokenManage, s.listTokens))
	m.HandleFunc("POST /v1/tokens", s.authed("token.create", authz.TokenManage, s.createToken))
	m.HandleFunc("DELETE /v1/tokens/{id}", s.authed("token.revoke", authz.TokenManage, s.revokeToken))

	m.HandleFunc("GET /v1/audit", s.authed("audit.query", authz.AuditRead, s.queryAudit))
	m.HandleFunc("GET /v1/audit/verify", s.authed("audit.verify", authz.AuditRead, s.verifyAudit))
	m.HandleFunc("GET /v1/audit/head", s.authed("audit.head", authz.AuditRead, s.auditHead))
	m.HandleFunc("GET /v1/audit/servers", s.authed("audit.servers", authz.AuditRead, s.auditServers))

	m.HandleFunc("GET /v1/agents", s.authed("agent.list", authz.AgentRead, s.listAgents))
	m.HandleFunc("DELETE /v1/agents/{name...}", s.authed("agent.revoke", authz.AgentManage, s.revokeAgent))
	m.HandleFunc("POST /v1/enroll", s.enroll)
	m.HandleFunc("GET /v1/whoami", s.authed("token.whoami", "", s.whoami))

	m.HandleFunc("POST /v1/incident/quarantine", s.authed("incident.quarantine", authz.AgentManage, s.quarantine))
	m.HandleFunc("POST /v1/incident/revoke-version", s.authed("incident.revoke_version", authz.AgentManage, s.revokeVersion))
	m.HandleFunc("POST /v1/incident/revoke-tokens", s.authed("incident.revoke_tokens", authz.TokenManage, s.revokeTokens))
	m.HandleFunc("GET /v1/incident/lockdown", s.authed("incident.status", authz.AuditRead, s.lockdownStatus))
	m.HandleFunc("PUT /v1/incident/lockdown", s.authed("incident.lockdown", authz.AgentManage, s.declareLockdown))
	m.HandleFunc("DELETE /v1/incident/lockdown", s.authed("incident.lift", authz.AgentManage, s.liftLockdown))
	m.HandleFunc("GET /v1/incident/report", s.authed("incident.report", authz.AuditRead, s.incidentReport))
	m.HandleFunc("GET /v1/login", s.loginMethods)
	m.HandleFunc("POST /v1/login", s.login)
	m.HandleFunc("POST /v1/logout", s.authed("session.logout", "", s.logout))
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.cfg.GRPC != nil && r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
		s.cfg.GRPC.ServeHTTP(w, r)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	// Names are exact: a path with "..", "." or "//" elements is refused,
	// not cleaned and redirected to another name.
	if p := r.URL.Path; p != "/" && path.Clean(p) != p {
		writeError(w, http.StatusBadRequest, "non-canonical path: names may not contain '..', '.' or empty elements")
		return
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.cfg.Ready != nil {
		if err := s.cfg.Ready(r.Context()); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	io.WriteString(w, "ready\n")
	// A degraded upstream keystore does not make the server unready: it
	// still serves every container the last value. It is reported.
	if s.cfg.Links != nil {
		for _, d := range s.cfg.Links.Degraded() {
			io.WriteString(w, d+"\n")
		}
	}
	if s.cfg.Dynamic != nil {
		for _, d := range s.cfg.Dynamic.Degraded() {
			io.WriteString(w, d+"\n")
		}
	}
}

// request is what a handler sees of an authenticated request.
type request struct {
	*http.Request
	p      authz.Principal // as seen for action (authz.Principal.For)
	tok    authn.Token     // the caller's token record
	action authz.Action
	object string            // audited object, set by the handler
	detail map[string]string // audited details, set by the handler (ids, versions; never values)
}

// authorize checks the principal may do the route's action on object, and
// records object for the audit trail.
func (r *request) authorize(object, name string) error {
	r.object = object
	return authz.Authorize(r.p, r.action, name)
}

func (r *request) note(k, v string) {
	if r.detail == nil {
		r.detail = map[string]string{}
	}
	r.detail[k] = v
}

type handlerFunc func(r *request) (int, any, error)

// authed authenticates the bearer token, runs h, audits the outcome and
// only then writes the response. If the audit record cannot be written, the
// client gets a 500 instead of the result.
func (s *Server) authed(auditAction string, action authz.Action, h handlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, hr *http.Request) {
		src := sourceOf(hr)
		if wait := s.throttle.blocked(src); wait > 0 {
			w.Header().Set("Retry-After", fmt.Sprint(int(wait.Seconds())+1))
			writeError(w, http.StatusTooManyRequests, "too many failed authentication attempts; retry later")
			return
		}
		tok, err := s.cfg.Tokens.Authenticate(bearer(hr))
		if err != nil {
			s.throttle.fail(src)
			s.record(hr.Context(), audit.Event{Actor: "anonymous", Action: auditAction, Result: "unauthenticated", Source: src})
			w.Header().Set("WWW-Authenticate", `Bearer realm="coffer"`)
			writeError(w, http.StatusUnauthorized, "missing, invalid, expired or revoked token")
			return
		}
		s.throttle.ok(src)
		r := &request{Request: hr, p: tok.Principal().For(action), tok: tok, action: action}
		code, body, err := 0, any(nil), s.lockedOut(hr.Method, r.p)
		if err == nil {
			code, body, err = h(r)
		}
		result := "ok"
		if err != nil {
			code = statusOf(err)
			result = resultOf(code)
			body = errorBody{Error: err.Error()}
		}
		ev := audit.Event{Actor: r.p.ID, Action: auditAction, Object: r.object, Result: result, Source: src, Details: r.detail}
		if err := s.record(hr.Context(), ev); err != nil {
			writeError(w, http.StatusInternalServerError, "audit trail unavailable: request not confirmed")
			return
		}
		if code >= 500 {
			s.log.Error("request failed", "action", auditAction, "object", r.object, "err", err)
		}
		writeJSON(w, code, body)
	}
}

func (s *Server) record(ctx context.Context, e audit.Event) error {
	_, err := s.cfg.Audit.Append(context.WithoutCancel(ctx), e)
	if err != nil {
		s.log.Error("audit append failed", "action", e.Action, "err", err)
	}
	return err
}

func bearer(r *http.Request) string {
	h := r.Header.Get("Authorization")
	if t, ok := strings.CutPrefix(h, "Bearer "); ok {
		return strings.TrimSpace(t)
	}
	return ""
}

func sourceOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

type errorBody struct {
	Error string `json:"error"`
}

// errTooLarge marks a body over the limit.
var errTooLarge = errors.New("request body too large")

// errBadRequest marks malformed requests.
var errBadRequest = errors.New("bad request")

func statusOf(err error) int {
	if code, ok := keystoreStatus(err); ok {
		return code
	}
	switch {
	case errors.Is(err, errTooLarge), errors.Is(err, catalog.ErrTooLarge):
		return http.StatusRequestEntityTooLarge
	case errors.Is(err, authz.ErrDenied):
		return http.StatusForbidden
	case errors.Is(err, catalog.ErrNotFound), errors.Is(err, fleet.ErrNotFound), errors.Is(err, authn.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, catalog.ErrConflict):
		return http.StatusConflict
	case errors.Is(err, catalog.ErrGone):
		return http.StatusGone
	case errors.Is(err, errBadRequest), errors.Is(err, secret.ErrInvalidName), errors.Is(err, policy.ErrInvalid),
		errors.Is(err, catalog.ErrInvalid), errors.Is(err, catalog.ErrEmpty):
		return http.StatusBadRequest
	case errors.Is(err, store.ErrCorrupt):
		return http.StatusInternalServerError
	case errors.Is(err, store.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

func resultOf(code int) string {
	switch {
	case code == http.StatusForbidden:
		return "denied"
	case code >= 500:
		return "error"
	case code == http.StatusNotFound:
		return "not_found"
	}
	return "invalid"
}

func writeJSON(w http.ResponseWriter, code int, body any) {
	if code == http.StatusNoContent || body == nil {
		w.WriteHeader(code)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(body)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// decode reads a JSON body of at most limit bytes into v: unknown fields,
// trailing data and malformed JSON are errors.
func decode(r *http.Request, limit int64, v any) error {
	body := http.MaxBytesReader(nil, r.Body, limit)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: limit is %d bytes", errTooLarge, limit)
		}
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: empty body, JSON expected", errBadRequest)
		}
		return fmt.Errorf("%w: malformed JSON: %v", errBadRequest, sanitize(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return fmt.Errorf("%w: limit is %d bytes", errTooLarge, limit)
		}
		return fmt.Errorf("%w: unexpected data after the JSON object", errBadRequest)
	}
	return nil
}

// jsonPath drops from a json error's field path the Go names of embedded
// structs ("Binding.hosts" is "hosts"): this API's JSON keys are lower-case.
func jsonPath(field string) string {
	parts := strings.Split(field, ".")
	keep := parts[:0]
	for _, p := range parts {
		if p == "" || p[0] < 'A' || p[0] > 'Z' {
			keep = append(keep, p)
		}
	}
	return strings.Join(keep, ".")
}

// sanitize keeps a JSON error's position and kind but never echoes body
// content (which may be a secret) back: json's errors quote offending input
// only for unknown field names and types, which are not values.
func sanitize(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		// te.Value is "number 42" for a number: keep the kind, not the literal.
		kind, _, _ := strings.Cut(te.Value, " ")
		return fmt.Sprintf("field %q: wrong type %s", jsonPath(te.Field), kind)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return "truncated"
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "json: unknown field") {
		return msg
	}
	return "invalid JSON"
}
