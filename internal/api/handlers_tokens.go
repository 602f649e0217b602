package api

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"coffer/internal/authn"
	"coffer/internal/authz"
)

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
