package api

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"coffer/internal/audit"
	"coffer/internal/authn"
	"coffer/internal/authz"
	"coffer/internal/broker"
	"coffer/internal/catalog"
	"coffer/internal/policy"
	"coffer/internal/secret"
)

const smallBody = 64 << 10

// PutSecretRequest is the body of PUT /v1/secrets/{name}: exactly one of
// Value (base64) and Generate.
type PutSecretRequest struct {
	Value    *string       `json:"value,omitempty"`
	Generate *GenerateSpec `json:"generate,omitempty"`
}

// GenerateSpec asks the server to make a random value.
type GenerateSpec struct {
	Length   int    `json:"length"`
	Alphabet string `json:"alphabet,omitempty"`
}

func (s *Server) putSecret(r *request) (int, any, error) {
	name := r.PathValue("name")
	if err := r.authorize("secret:"+name, name); err != nil {
		return 0, nil, err
	}
	if err := secret.ValidateName(name); err != nil {
		return 0, nil, err
	}
	var req PutSecretRequest
	limit := int64(s.cfg.MaxValueSize)*4/3 + smallBody
	if err := decode(r.Request, limit, &req); err != nil {
		return 0, nil, err
	}
	var meta catalog.SecretMeta
	var err error
	switch {
	case (req.Value == nil) == (req.Generate == nil):
		return 0, nil, fmt.Errorf("%w: give exactly one of \"value\" (base64) and \"generate\"", errBadRequest)
	case req.Generate != nil:
		meta, err = s.cfg.Catalog.Generate(r.Context(), name, req.Generate.Length, req.Generate.Alphabet, r.p.ID)
		r.note("generated", "true")
	default:
		v, derr := base64.StdEncoding.DecodeString(*req.Value)
		if derr != nil {
			return 0, nil, fmt.Errorf("%w: \"value\" is not valid base64", errBadRequest)
		}
		val := secret.Value(v)
		meta, err = s.cfg.Catalog.Put(r.Context(), name, val, r.p.ID)
		val.Zero()
		clear([]byte(*req.Value))
	}
	if err != nil {
		return 0, nil, err
	}
	r.note("version", strconv.FormatUint(meta.Current, 10))
	code := http.StatusOK
	if meta.Current == 1 {
		code = http.StatusCreated
	}
	return code, meta, nil
}

func (s *Server) listSecrets(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	prefix := r.URL.Query().Get("prefix")
	all, err := s.cfg.Catalog.List(r.Context(), prefix)
	if err != nil {
		return 0, nil, err
	}
	out := []catalog.SecretMeta{}
	for _, m := range all {
		if authz.InScope(r.p, m.Name) {
			out = append(out, m)
		}
	}
	return http.StatusOK, out, nil
}

// SecretView is a secret's metadata with its rollout state.
type SecretView struct {
	catalog.SecretMeta
	Holders []broker.Holder `json:"holders"`
	Pending int             `json:"pending"`
}

func (s *Server) showSecret(r *request) (int, any, error) {
	name := r.PathValue("name")
	if err := r.authorize("secret:"+name, name); err != nil {
		return 0, nil, err
	}
	meta, err := s.cfg.Catalog.Show(r.Context(), name)
	if err != nil {
		return 0, nil, err
	}
	v := SecretView{SecretMeta: meta, Holders: []broker.Holder{}}
	if s.cfg.Broker != nil {
		v.Holders = s.cfg.Broker.Rollout(name)
		for _, h := range v.Holders {
			if h.Pending {
				v.Pending++
			}
		}
	}
	return http.StatusOK, v, nil
}

func (s *Server) deleteSecret(r *request) (int, any, error) {
	name := r.PathValue("name")
	if err := r.authorize("secret:"+name, name); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, s.cfg.Catalog.Delete(r.Context(), name)
}

func (s *Server) listBindings(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	all, err := s.cfg.Catalog.ListBindings(r.Context())
	if err != nil {
		return 0, nil, err
	}
	out := []policy.Binding{}
	for _, b := range all {
		if authz.InScope(r.p, b.Secret) {
			out = append(out, b)
		}
	}
	return http.StatusOK, out, nil
}

func (s *Server) showBinding(r *request) (int, any, error) {
	b, err := s.binding(r)
	if errors.Is(err, authz.ErrDenied) {
		// Outside the token's scope: as if it did not exist.
		return 0, nil, fmt.Errorf("binding %s: %w", b.Name, catalog.ErrNotFound)
	}
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, b, nil
}

// binding loads the binding named in r's path, if r's principal may do r's
// action on bindings and on the binding's secret.
func (s *Server) binding(r *request) (policy.Binding, error) {
	name := r.PathValue("name")
	r.object = "binding:" + name
	if err := authz.Authorize(r.p, r.action, ""); err != nil {
		return policy.Binding{}, err
	}
	b, err := s.cfg.Catalog.GetBinding(r.Context(), name)
	if err != nil {
		return policy.Binding{}, err
	}
	if err := authz.Authorize(r.p, r.action, b.Secret); err != nil {
		return policy.Binding{Name: name}, err
	}
	return b, nil
}

func (s *Server) putBinding(r *request) (int, any, error) {
	name := r.PathValue("name")
	r.object = "binding:" + name
	var b policy.Binding
	if err := decode(r.Request, smallBody, &b); err != nil {
		return 0, nil, err
	}
	if b.Name != "" && b.Name != name {
		return 0, nil, fmt.Errorf("%w: body names binding %q, path %q", errBadRequest, b.Name, name)
	}
	b.Name = name
	if err := authz.Authorize(r.p, r.action, b.Secret); err != nil {
		return 0, nil, err
	}
	if old, err := s.cfg.Catalog.GetBinding(r.Context(), name); err == nil && !authz.InScope(r.p, old.Secret) {
		return 0, nil, fmt.Errorf("%w: binding %s serves a secret outside this token's scope", authz.ErrDenied, name)
	}
	r.note("secret", b.Secret)
	out, err := s.cfg.Catalog.PutBinding(r.Context(), b)
	if err != nil {
		return 0, nil, err
	}
	r.note("selector", out.Selector)
	return http.StatusOK, out, nil
}

func (s *Server) deleteBinding(r *request) (int, any, error) {
	b, err := s.binding(r)
	if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, s.cfg.Catalog.DeleteBinding(r.Context(), b.Name)
}

// EvaluateRequest describes a container for POST /v1/evaluate.
type EvaluateRequest struct {
	Labels      map[string]string `json:"labels"`
	Image       string            `json:"image,omitempty"`
	ImageDigest string            `json:"image_digest,omitempty"`
}

func (s *Server) evaluate(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	var req EvaluateRequest
	if err := decode(r.Request, smallBody, &req); err != nil {
		return 0, nil, err
	}
	grants := s.cfg.Catalog.Bindings().Match(policy.Target{Labels: req.Labels, Image: req.Image, ImageDigest: req.ImageDigest})
	out := []policy.Grant{}
	for _, g := range grants {
		if authz.InScope(r.p, g.Secret) {
			out = append(out, g)
		}
	}
	return http.StatusOK, out, nil
}

// CreateTokenRequest is the body of POST /v1/tokens.
type CreateTokenRequest struct {
	Role        string `json:"role"`
	TTL         string `json:"ttl,omitempty"` // Go duration, e.g. "1h"; "" = no expiry (agent: 1h)
	Scope       string `json:"scope,omitempty"`
	Description string `json:"description,omitempty"`
}

// CreateTokenResponse carries the new token: the only time it is shown.
type CreateTokenResponse struct {
	Token string `json:"token"`
	tokenRecord
}

// tokenRecord lets the record's fields sit beside Token in JSON.
type tokenRecord = authn.Token

func (s *Server) createToken(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	var req CreateTokenRequest
	if err := decode(r.Request, smallBody, &req); err != nil {
		return 0, nil, err
	}
	role, err := authz.ParseRole(req.Role)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	// A scoped token can only hand out tokens inside its own scope.
	if r.p.Scope != "" && !strings.HasPrefix(authz.NormalizeScope(req.Scope), r.p.Scope) {
		return 0, nil, fmt.Errorf("%w: a token scoped to %q can only create tokens within that scope", authz.ErrDenied, r.p.Scope)
	}
	var ttl time.Duration
	if req.TTL != "" {
		if ttl, err = time.ParseDuration(req.TTL); err != nil || ttl <= 0 {
			return 0, nil, fmt.Errorf("%w: ttl %q: use a positive duration such as 30m, 24h", errBadRequest, req.TTL)
		}
	}
	plain, rec, err := s.cfg.Tokens.Create(r.Context(), authn.CreateOptions{Role: role, TTL: ttl, Scope: req.Scope, Description: req.Description, CreatedBy: r.p.ID})
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	r.object = "token:" + rec.ID
	r.note("role", string(rec.Role))
	return http.StatusCreated, CreateTokenResponse{Token: plain, tokenRecord: rec}, nil
}

func (s *Server) listTokens(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	return http.StatusOK, s.cfg.Tokens.List(), nil
}

func (s *Server) revokeToken(r *request) (int, any, error) {
	id := r.PathValue("id")
	if err := r.authorize("token:"+id, ""); err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, s.cfg.Tokens.Revoke(r.Context(), id)
}

func (s *Server) queryAudit(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	q := r.URL.Query()
	f := audit.Filter{Actor: q.Get("actor"), Action: q.Get("action"), Secret: q.Get("secret"), Object: q.Get("object")}
	if v := q.Get("since"); v != "" {
		t, err := parseSince(v)
		if err != nil {
			return 0, nil, err
		}
		f.Since = t
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return 0, nil, fmt.Errorf("%w: limit %q: a non-negative number", errBadRequest, v)
		}
		f.Limit = n
	}
	evs, err := s.cfg.Audit.Query(r.Context(), f)
	if err != nil {
		return 0, nil, err
	}
	out := []audit.Event{}
	for _, ev := range evs {
		if r.p.Scope == "" || inScope(r.p, ev) {
			out = append(out, ev)
		}
	}
	evs = out
	return http.StatusOK, evs, nil
}

// inScope reports whether an audit record is about a secret within p's scope.
func inScope(p authz.Principal, ev audit.Event) bool {
	name := ev.Details["secret"]
	if n, ok := strings.CutPrefix(ev.Object, "secret:"); ok {
		name = n
	}
	return name != "" && authz.InScope(p, name)
}

// parseSince accepts RFC 3339 times and durations ("1h" = the last hour).
func parseSince(v string) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil && d > 0 {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%w: since %q: use RFC 3339 (2026-01-02T15:04:05Z) or a duration (24h)", errBadRequest, v)
	}
	return t, nil
}

// VerifyResponse is the answer of GET /v1/audit/verify.
type VerifyResponse struct {
	OK      bool   `json:"ok"`
	Records uint64 `json:"records"`
	Head    string `json:"head"`
	Error   string `json:"error,omitempty"`
}

func (s *Server) verifyAudit(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	h, err := s.cfg.Audit.Verify(r.Context())
	if err != nil {
		return http.StatusOK, VerifyResponse{OK: false, Records: h.Seq, Error: err.Error()}, nil
	}
	return http.StatusOK, VerifyResponse{OK: true, Records: h.Seq, Head: h.Hash}, nil
}

// AgentView is an agent with its live state.
type AgentView struct {
	Name       string    `json:"name"`
	Address    string    `json:"address,omitempty"`
	Enrolled   time.Time `json:"enrolled"`
	LastSeen   time.Time `json:"last_seen,omitzero"`
	Connected  bool      `json:"connected"`
	Containers int       `json:"containers"`
}

func (s *Server) listAgents(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	connected := map[string]bool{}
	counts := map[string]int{}
	if s.cfg.Broker != nil {
		for _, n := range s.cfg.Broker.Connected() {
			connected[n] = true
		}
		counts = s.cfg.Broker.Containers()
	}
	out := []AgentView{}
	for _, a := range s.cfg.Fleet.List() {
		v := AgentView{Name: a.Name, Address: a.Address, Enrolled: a.Enrolled, LastSeen: a.LastSeen, Connected: connected[a.Name], Containers: counts[a.Name]}
		if v.Connected {
			v.LastSeen = time.Now().UTC()
		}
		out = append(out, v)
	}
	return http.StatusOK, out, nil
}

func (s *Server) revokeAgent(r *request) (int, any, error) {
	name := r.PathValue("name")
	if err := r.authorize("agent:"+name, ""); err != nil {
		return 0, nil, err
	}
	if err := s.cfg.Fleet.Remove(r.Context(), name); err != nil {
		return 0, nil, err
	}
	if s.cfg.Broker != nil {
		s.cfg.Broker.Disconnect(name)
	}
	return http.StatusNoContent, nil, nil
}
