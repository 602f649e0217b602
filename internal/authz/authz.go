// Package authz decides what a principal may do: roles over actions, and an
// optional name-prefix scope on tokens.
package authz

import (
	"errors"
	"fmt"
	"strings"
)

// ErrDenied is returned (wrapped) when a principal may not do something.
var ErrDenied = errors.New("permission denied")

// Role is a token's role.
type Role string

// Roles.
const (
	Admin    Role = "admin"    // everything
	Operator Role = "operator" // secrets and bindings
	Auditor  Role = "auditor"  // audit trail and metadata
	Viewer   Role = "viewer"   // metadata
	Agent    Role = "agent"    // one-time join token for an agent's enrollment
)

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case Admin, Operator, Auditor, Viewer, Agent:
		return r, nil
	}
	return "", fmt.Errorf("unknown role %q (use admin, operator, auditor, viewer or agent)", s)
}

// Action is something a request does.
type Action string

// Actions.
const (
	SecretWrite  Action = "secret.write"  // put, generate, delete
	SecretRead   Action = "secret.read"   // list, show metadata (never values)
	BindingWrite Action = "binding.write" // create, delete
	BindingRead  Action = "binding.read"  // list, show, test
	TokenManage  Action = "token.manage"  // create, list, revoke
	AuditRead    Action = "audit.read"    // query, verify
	AgentRead    Action = "agent.read"    // list agents
	AgentManage  Action = "agent.manage"  // revoke agents
)

var grants = map[Role][]Action{
	Admin:    {SecretWrite, SecretRead, BindingWrite, BindingRead, TokenManage, AuditRead, AgentRead, AgentManage},
	Operator: {SecretWrite, SecretRead, BindingWrite, BindingRead, AgentRead},
	Auditor:  {SecretRead, BindingRead, AuditRead, AgentRead},
	Viewer:   {SecretRead, BindingRead, AgentRead},
}

// Principal is who is asking.
type Principal struct {
	ID    string // e.g. "token:3f2a...", "agent:web-1" or "ldap:alice"
	Role  Role
	Scope string // name prefix the principal is limited to ("" = all)
	// Grants, when not nil, replace Role and Scope: the principal may do
	// what any one grant allows, each within its own scope (a directory
	// login in several mapped groups). Role and Scope then only summarize
	// them (see For). A non-nil empty Grants allows nothing.
	Grants []Grant
}

// Grant is one role within one scope.
type Grant struct {
	Role  Role   `json:"role" yaml:"role"`
	Scope string `json:"scope,omitempty" yaml:"scope"`
}

// grantList is p's grants: Grants, or the one grant of Role and Scope.
func (p Principal) grantList() []Grant {
	if p.Grants != nil {
		return p.Grants
	}
	return []Grant{{Role: p.Role, Scope: p.Scope}}
}

// roleOrder ranks roles from the widest, for summaries only.
var roleOrder = []Role{Admin, Operator, Auditor, Viewer, Agent}

// WidestRole is the first of admin, operator, auditor, viewer, agent that
// one of gs has: a summary for display, never used to authorize.
func WidestRole(gs []Grant) Role {
	for _, r := range roleOrder {
		for _, g := range gs {
			if g.Role == r {
				return r
			}
		}
	}
	return ""
}

// For returns p as seen by a request for action a: only the grants that
// allow a are kept, so that the scope checks a handler makes (InScope,
// ScopeWithin) count only scopes in which a is allowed; a == "" keeps every
// grant. Role and Scope summarize what is kept: Scope is "" only when one
// kept grant is unscoped, so that "p.Scope != \"\"" still means "filter by
// InScope". A principal without Grants is returned as it is.
func (p Principal) For(a Action) Principal {
	if p.Grants == nil {
		return p
	}
	kept := []Grant{}
	for _, g := range p.Grants {
		if a == "" || roleGrants(g.Role, a) {
			kept = append(kept, g)
		}
	}
	p.Grants = kept
	p.Role = WidestRole(kept)
	p.Scope = ""
	for i, g := range kept {
		if g.Scope == "" {
			p.Scope = ""
			break
		}
		if i == 0 {
			p.Scope = g.Scope
		}
	}
	return p
}

func roleGrants(r Role, a Action) bool {
	for _, g := range grants[r] {
		if g == a {
			return true
		}
	}
	return false
}

// Authorize returns nil if p may do a on the named object ("" when the action
// has no object, e.g. a list, whose results the caller filters with InScope).
//
// With several grants, some one grant must allow a and hold object in its
// scope.
func Authorize(p Principal, a Action, object string) error {
	if p.Grants == nil {
		if !roleGrants(p.Role, a) {
			return fmt.Errorf("%w: role %s may not %s", ErrDenied, p.Role, a)
		}
		if object != "" && !InScope(p, object) {
			return fmt.Errorf("%w: %s is outside this token's scope %q", ErrDenied, object, p.Scope)
		}
		return nil
	}
	allowed := false
	for _, g := range p.Grants {
		if roleGrants(g.Role, a) {
			allowed = true
			if object == "" || strings.HasPrefix(object, g.Scope) {
				return nil
			}
		}
	}
	if !allowed {
		return fmt.Errorf("%w: no role of %s may %s", ErrDenied, p.ID, a)
	}
	return fmt.Errorf("%w: %s is outside every scope in which %s may %s", ErrDenied, object, p.ID, a)
}

// InScope reports whether name is inside p's scope (one of its grants'
// scopes: take p.For(action) first so that only the grants for the action
// count).
func InScope(p Principal, name string) bool {
	for _, g := range p.grantList() {
		if strings.HasPrefix(name, g.Scope) {
			return true
		}
	}
	return false
}

// ScopeWithin reports whether scope (normalized, as on a token or an agent)
// lies within p's scope: an unscoped principal covers every scope, a scoped
// one covers its own scope and narrower ones, and an unscoped token or agent
// ("" = everything) lies outside every scope.
func ScopeWithin(p Principal, scope string) bool {
	for _, g := range p.grantList() {
		if g.Scope == "" || scope != "" && strings.HasPrefix(scope, g.Scope) {
			return true
		}
	}
	return false
}

// NormalizeScope turns "payments/*" or "payments/" or "payments" into the
// prefix "payments/"; "" and "*" mean everything.
func NormalizeScope(s string) string {
	s = strings.TrimSuffix(s, "*")
	if s == "" {
		return ""
	}
	if !strings.HasSuffix(s, "/") {
		s += "/"
	}
	return s
}
