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
	ID    string // e.g. "token:3f2a..." or "agent:web-1"
	Role  Role
	Scope string // name prefix the principal is limited to ("" = all)
}

// Authorize returns nil if p may do a on the named object ("" when the action
// has no object, e.g. a list, whose results the caller filters with InScope).
func Authorize(p Principal, a Action, object string) error {
	ok := false
	for _, g := range grants[p.Role] {
		if g == a {
			ok = true
			break
		}
	}
	if !ok {
		return fmt.Errorf("%w: role %s may not %s", ErrDenied, p.Role, a)
	}
	if object != "" && !InScope(p, object) {
		return fmt.Errorf("%w: %s is outside this token's scope %q", ErrDenied, object, p.Scope)
	}
	return nil
}

// InScope reports whether name is inside p's scope.
func InScope(p Principal, name string) bool { return strings.HasPrefix(name, p.Scope) }

// ScopeWithin reports whether scope (normalized, as on a token or an agent)
// lies within p's scope: an unscoped principal covers every scope, a scoped
// one covers its own scope and narrower ones, and an unscoped token or agent
// ("" = everything) lies outside every scope.
func ScopeWithin(p Principal, scope string) bool {
	if p.Scope == "" {
		return true
	}
	return scope != "" && strings.HasPrefix(scope, p.Scope)
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
