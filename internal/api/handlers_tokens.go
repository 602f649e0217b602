package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"coffer/internal/authn"
	"coffer/internal/authz"
	"coffer/internal/policy"
)

// CreateTokenRequest is the body of POST /v1/tokens.
type CreateTokenRequest struct {
	Role string `json:"role"`
	// TTL is a lifetime (authn.ParseTTL: "1h", "30d", "2w") or "never";
	// "" = no expiry (agent: 1h). "0s" is refused, not read as "never".
	TTL         string `json:"ttl,omitempty"`
	Scope       string `json:"scope,omitempty"`
	Description string `json:"description,omitempty"`
	// AgentLabels, only with role agent: the labels the enrolled agent gets.
	AgentLabels map[string]string `json:"agent_labels,omitempty"`
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
	if len(req.AgentLabels) > 0 {
		if role != authz.Agent {
			return 0, nil, fmt.Errorf("%w: agent_labels: only a join token (role agent) carries agent labels", errBadRequest)
		}
		if err := policy.ValidateLabels(req.AgentLabels); err != nil {
			return 0, nil, fmt.Errorf("%w: agent_labels: %s", errBadRequest, labelsProblem(err))
		}
	}
	// A scoped principal hands out only tokens within its own scope; its
	// join tokens get its scope unless they ask for a narrower one, so that
	// their agents inherit it.
	scope := authz.NormalizeScope(req.Scope)
	if role == authz.Agent && req.Scope == "" {
		scope = r.p.Scope
	}
	if !authz.ScopeWithin(r.p, scope) {
		return 0, nil, fmt.Errorf("%w: a token scoped to %q can only create tokens within that scope", authz.ErrDenied, r.p.Scope)
	}
	var ttl time.Duration
	if req.TTL != "" {
		if ttl, err = authn.ParseTTL(req.TTL); err != nil {
			return 0, nil, fmt.Errorf("%w: %v", errBadRequest, err)
		}
		if ttl == 0 && role == authz.Agent {
			return 0, nil, fmt.Errorf("%w: ttl %q: a join token must expire (at most %s)", errBadRequest, req.TTL, authn.MaxJoinTTL)
		}
	}
	plain, rec, err := s.cfg.Tokens.Create(r.Context(), authn.CreateOptions{
		Role: role, TTL: ttl, Scope: scope, Description: req.Description, CreatedBy: r.p.ID, AgentLabels: req.AgentLabels,
	})
	if errors.Is(err, authn.ErrInvalid) {
		return 0, nil, fmt.Errorf("%w: %v", errBadRequest, err)
	}
	if err != nil {
		return 0, nil, err
	}
	r.object = "token:" + rec.ID
	r.note("role", string(rec.Role))
	if rec.Scope != "" {
		r.note("scope", rec.Scope)
	}
	if len(rec.AgentLabels) > 0 {
		r.note("labels", policy.FormatLabels(rec.AgentLabels))
	}
	return http.StatusCreated, CreateTokenResponse{Token: plain, tokenRecord: rec}, nil
}

// listTokens lists the records of the tokens within the principal's scope.
func (s *Server) listTokens(r *request) (int, any, error) {
	if err := r.authorize("", ""); err != nil {
		return 0, nil, err
	}
	out := []authn.Token{}
	for _, t := range s.cfg.Tokens.List() {
		if authz.ScopeWithin(r.p, t.Scope) {
			out = append(out, t)
		}
	}
	return http.StatusOK, out, nil
}

// revokeToken revokes a token within the principal's scope; one outside it
// is answered exactly like an unknown id.
func (s *Server) revokeToken(r *request) (int, any, error) {
	id := r.PathValue("id")
	if err := r.authorize("token:"+id, ""); err != nil {
		return 0, nil, err
	}
	notFound := fmt.Errorf("token %s: %w", id, authn.ErrNotFound)
	t, ok := s.cfg.Tokens.Lookup(id)
	if !ok || !authz.ScopeWithin(r.p, t.Scope) {
		return 0, nil, notFound
	}
	if err := s.cfg.Tokens.Revoke(r.Context(), id); errors.Is(err, authn.ErrNotFound) {
		return 0, nil, notFound
	} else if err != nil {
		return 0, nil, err
	}
	return http.StatusNoContent, nil, nil
}

// labelsProblem is a label set's error without the policy package's
// "invalid binding" prefix, which says nothing about a token.
func labelsProblem(err error) string {
	return strings.TrimPrefix(err.Error(), policy.ErrInvalid.Error()+": ")
}
