package api

import (
	"net/http"
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
	// Session, Groups and Grants describe a login session (ID ldap:alice):
	// its token id, the groups mapped at login and what each allows (Role
	// and Scope then only summarize Grants; Actions are those of any grant).
	Session string        `json:"session,omitempty"`
	Groups  []string      `json:"groups,omitempty"`
	Grants  []authz.Grant `json:"grants,omitempty"`
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
	if t, ok := s.cfg.Tokens.Lookup(r.tok.ID); ok {
		out.Description, out.CreatedBy, out.Created, out.Expires = t.Description, t.CreatedBy, t.Created, t.Expires
		if t.Session() {
			out.Session, out.Groups, out.Grants = t.ID, t.Groups, t.Grants
		}
	}
	for _, a := range allActions {
		if authz.Authorize(r.p, a, "") == nil {
			out.Actions = append(out.Actions, a)
		}
	}
	return http.StatusOK, out, nil
}
