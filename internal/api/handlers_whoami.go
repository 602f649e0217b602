package api

import (
	"net/http"
	"strings"
	"time"

	"coffer/internal/authz"
)

// WhoamiResponse describes the caller's token: never the token itself.
type WhoamiResponse struct {
	ID          string     `json:"id"` // the principal, as in audit records: token:<id>
	Role        authz.Role `json:"role"`
	Scope       string     `json:"scope,omitempty"`
	Description string     `json:"description,omitempty"`
	CreatedBy   string     `json:"created_by,omitempty"`
	Created     time.Time  `json:"created,omitzero"`
	Expires     time.Time  `json:"expires,omitzero"`
	// Actions are the authorization actions the role grants (within Scope).
	Actions []authz.Action `json:"actions"`
}

// allActions lists every authorization action, for whoami.
var allActions = []authz.Action{
	authz.SecretRead, authz.SecretWrite, authz.BindingRead, authz.BindingWrite,
	authz.TokenManage, authz.AuditRead, authz.AgentRead, authz.AgentManage,
}

// whoami answers any authenticated caller with its own principal. It needs
// no action: every token may learn what it is.
func (s *Server) whoami(r *request) (int, any, error) {
	r.object = r.p.ID
	out := WhoamiResponse{ID: r.p.ID, Role: r.p.Role, Scope: r.p.Scope, Actions: []authz.Action{}}
	if t, ok := s.cfg.Tokens.Lookup(strings.TrimPrefix(r.p.ID, "token:")); ok {
		out.Description, out.CreatedBy, out.Created, out.Expires = t.Description, t.CreatedBy, t.Created, t.Expires
	}
	for _, a := range allActions {
		if authz.Authorize(r.p, a, "") == nil {
			out.Actions = append(out.Actions, a)
		}
	}
	return http.StatusOK, out, nil
}
